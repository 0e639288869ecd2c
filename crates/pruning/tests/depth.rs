//! Depth pruning: removing a block computes what silencing it (zeroing its residual writes)
//! computes, in both families; block scores and the choice of blocks to remove.

mod common;

use common::*;
use squish_core::checkpoint::Checkpoint;
use squish_core::model::depth::{remove_block, silence_block};
use squish_core::model::structure::describe;
use squish_prune::depth::{block_kl, choose, remove_blocks};

/// For every block: `max |logits(removed) − logits(silenced)|` ≤ 1e-5, and silencing changes
/// the model (so the equality is not trivially true).
fn check_removal_equals_silencing(ck: &Checkpoint) {
    let batch = windows(11, 2, 12);
    let full = logits(&ck.config, &ck.weights, &batch);
    for b in 0..ck.config.n_layers() {
        let (mut cfg, mut removed) = (ck.config.clone(), ck.weights.clone());
        remove_block(&mut cfg, &mut removed, b).unwrap();
        describe(&cfg, &removed)
            .unwrap()
            .check_coverage(&removed)
            .unwrap();
        let mut silenced = ck.weights.clone();
        silence_block(&ck.config, &mut silenced, b).unwrap();
        let a = logits(&cfg, &removed, &batch);
        let z = logits(&ck.config, &silenced, &batch);
        assert!(
            max_abs_diff(&a, &full) > 1e-3,
            "block {b}: removal should change the model"
        );
        let d = max_abs_diff(&a, &z);
        assert!(d <= 1e-5, "block {b}: removed vs silenced differ by {d}");
    }
}

#[test]
fn ssm_moe_block_removal_equals_silencing() {
    check_removal_equals_silencing(&tiny_ssm(3));
}

#[test]
fn llama_block_removal_equals_silencing() {
    check_removal_equals_silencing(&tiny_llama(4));
}

#[test]
fn blocks_are_scored_and_the_least_important_removed() {
    let ck = tiny_ssm(5);
    let device = device();
    let calib = windows(2, 8, 16);
    let scores = block_kl(&ck.config, &ck.weights, &calib, &device).unwrap();
    assert_eq!(scores.len(), ck.config.n_layers());
    assert!(
        scores.iter().all(|s| s.is_finite() && *s > 0.0),
        "{scores:?}"
    );
    let drop = choose(&scores, 1);
    assert_eq!(drop.len(), 1);
    let keep = (0..scores.len()).find(|b| !drop.contains(b)).unwrap();
    assert!(scores[drop[0]] <= scores[keep]);
    let (mut cfg, mut w) = (ck.config.clone(), ck.weights.clone());
    remove_blocks(&mut cfg, &mut w, &drop).unwrap();
    assert_eq!(cfg.n_layers(), ck.config.n_layers() - 1);
    assert!(w.param_count() < ck.weights.param_count());
    assert!(block_kl(&ck.config, &ck.weights, &[], &device).is_err());
}
