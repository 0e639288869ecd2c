//! Dependency groups derived from the structural description: coverage, shape consistency and
//! exact equivalence of removal with zeroing.

mod common;

use common::*;
use squish_core::checkpoint::Checkpoint;
use squish_core::model::structure::{DimKind, describe, residual_width};
use squish_prune::groups::{apply_plan, rescale_norms, zero_units};

/// Drops units {1, 4, 7, ...every third} of every dim of `kinds`, and zeroes them in a copy;
/// the two models must give the same logits (after width pruning, with the norms rescaled).
fn check_equivalence(ck: &Checkpoint, kinds: &[DimKind]) {
    let diff = pruned_vs_zeroed(ck, kinds, true);
    assert!(diff < 1e-5, "{kinds:?}: pruned vs zeroed differ by {diff}");
}

/// `max |logits(pruned) − logits(zeroed)|` for the plan of [`check_equivalence`]; residual
/// channels are followed by [`rescale_norms`] when `rescale`.
fn pruned_vs_zeroed(ck: &Checkpoint, kinds: &[DimKind], rescale: bool) -> f32 {
    let s = describe(&ck.config, &ck.weights).unwrap();
    s.check_coverage(&ck.weights).unwrap();
    let mut drop = vec![Vec::new(); s.dims.len()];
    let mut zeroed = ck.weights.clone();
    for (d, dim) in s.dims.iter().enumerate() {
        if !kinds.contains(&dim.kind) {
            continue;
        }
        let units: Vec<usize> = (0..dim.units).filter(|u| u % 3 == 1).collect();
        zero_units(&mut zeroed, dim, &units).unwrap();
        drop[d] = units;
    }
    let mut pruned = ck.weights.clone();
    apply_plan(&mut pruned, &s, &drop).unwrap();
    assert!(pruned.param_count() < ck.weights.param_count());
    let mut config = ck.config.clone();
    let vocab = config.vocab_size();
    let (from, to) = (
        residual_width(&ck.weights, vocab).unwrap(),
        residual_width(&pruned, vocab).unwrap(),
    );
    if rescale && from != to {
        rescale_norms(&mut config, &mut pruned, &s, from, to).unwrap();
    }
    let s2 = describe(&config, &pruned).unwrap();
    s2.check_coverage(&pruned).unwrap();
    let batch = windows(5, 2, 12);
    let a = logits(&config, &pruned, &batch);
    let b = logits(&ck.config, &zeroed, &batch);
    let full = logits(&ck.config, &ck.weights, &batch);
    assert!(
        max_abs_diff(&a, &full) > 1e-3,
        "{kinds:?}: removing units should change the model"
    );
    max_abs_diff(&a, &b)
}

#[test]
fn ssm_moe_residual_channels_equal_zeroing() {
    check_equivalence(&tiny_ssm(5), &[DimKind::Residual]);
    check_equivalence(
        &tiny_ssm(6),
        &[
            DimKind::Residual,
            DimKind::ExpertChannels,
            DimKind::SsmChannels,
        ],
    );
}

#[test]
fn llama_residual_channels_equal_zeroing_tied_and_untied() {
    check_equivalence(&tiny_llama(5), &[DimKind::Residual]);
    check_equivalence(&untied(tiny_llama(6)), &[DimKind::Residual]);
    check_equivalence(
        &untied(tiny_llama(7)),
        &[DimKind::Residual, DimKind::FfnChannels, DimKind::KvHeads],
    );
}

/// Without the norm rescaling, width pruning is not zeroing: every RMSNorm averages over fewer
/// channels. The difference is the effect `rescale_norms` removes.
#[test]
fn residual_removal_without_rescaled_norms_differs_from_zeroing() {
    for ck in [tiny_ssm(8), tiny_llama(8)] {
        let diff = pruned_vs_zeroed(&ck, &[DimKind::Residual], false);
        assert!(diff > 1e-3, "{:?}: {diff}", ck.config.arch());
    }
}

#[test]
fn rescale_norms_refuses_a_wider_model() {
    let ck = tiny_ssm(1);
    let s = describe(&ck.config, &ck.weights).unwrap();
    let (mut config, mut w) = (ck.config.clone(), ck.weights.clone());
    assert!(rescale_norms(&mut config, &mut w, &s, 16, 17).is_err());
    rescale_norms(&mut config, &mut w, &s, 16, 16).unwrap();
    assert_eq!((config, w), (ck.config.clone(), ck.weights.clone()));
}

#[test]
fn ssm_moe_expert_channels_equal_zeroing() {
    check_equivalence(&tiny_ssm(1), &[DimKind::ExpertChannels]);
}

#[test]
fn ssm_moe_ssm_channels_equal_zeroing() {
    check_equivalence(&tiny_ssm(2), &[DimKind::SsmChannels]);
}

#[test]
fn llama_ffn_channels_and_heads_equal_zeroing() {
    check_equivalence(&tiny_llama(3), &[DimKind::FfnChannels]);
    check_equivalence(&tiny_llama(3), &[DimKind::KvHeads]);
    check_equivalence(&tiny_llama(4), &[DimKind::FfnChannels, DimKind::KvHeads]);
}

#[test]
fn every_tensor_is_covered_and_unknown_tensors_are_reported() {
    for ck in [tiny_ssm(1), tiny_llama(1)] {
        let s = describe(&ck.config, &ck.weights).unwrap();
        s.check_coverage(&ck.weights).unwrap();
        let mut w = ck.weights.clone();
        w.insert(
            "layers.0.extra.weight",
            squish_core::checkpoint::WeightTensor::f32(vec![2], vec![0.0; 2]).unwrap(),
        );
        let err = s.check_coverage(&w).unwrap_err().to_string();
        assert!(err.contains("layers.0.extra.weight"), "{err}");
    }
}

#[test]
fn removing_experts_renames_and_loads() {
    let ck = tiny_ssm(6);
    let s = describe(&ck.config, &ck.weights).unwrap();
    let mut drop = vec![Vec::new(); s.dims.len()];
    for (d, dim) in s.dims.iter().enumerate() {
        match (dim.kind, dim.layer, dim.expert) {
            (DimKind::Experts, 0, _) => drop[d] = vec![0, 2],
            (DimKind::ExpertChannels, 0, Some(1)) => drop[d] = vec![0, 5],
            (DimKind::ExpertChannels, 0, Some(2)) => drop[d] = vec![3], // inside a removed expert
            _ => {}
        }
    }
    let mut w = ck.weights.clone();
    apply_plan(&mut w, &s, &drop).unwrap();
    let s2 = describe(&ck.config, &w).unwrap();
    s2.check_coverage(&w).unwrap();
    let experts = s2
        .dims
        .iter()
        .find(|d| d.kind == DimKind::Experts && d.layer == 0)
        .unwrap();
    assert_eq!(experts.units, 2);
    // Old expert 1 (with two channels removed) is now expert 0; old expert 3 is expert 1.
    assert_eq!(
        w.get("layers.0.moe.experts.0.w1.weight").unwrap().shape,
        vec![22, 16]
    );
    assert_eq!(
        w.get("layers.0.moe.experts.1.w2.weight").unwrap().to_f32(),
        ck.weights
            .get("layers.0.moe.experts.3.w2.weight")
            .unwrap()
            .to_f32()
    );
    assert!(!w.contains("layers.0.moe.experts.2.w1.weight"));
    assert_eq!(
        w.get("layers.0.moe.router.weight").unwrap().shape,
        vec![2, 16]
    );
    let batch = windows(1, 1, 8);
    let out = logits(&ck.config, &w, &batch);
    assert!(out.iter().all(|x| x.is_finite()));
}

#[test]
fn real_checkpoints_are_fully_covered() {
    for rel in [
        "checkpoints/phase7/baseline/model.safetensors",
        "checkpoints/stories260k/f32.safetensors",
    ] {
        let p = squish_core::shared::workspace_root().join(rel);
        if !p.is_file() {
            eprintln!("NOTICE: skipping: {rel} not present");
            continue;
        }
        let ck = squish_core::checkpoint::load(&p).unwrap();
        let s = describe(&ck.config, &ck.weights).unwrap();
        s.check_coverage(&ck.weights).unwrap();
        assert!(s.dims.iter().all(|d| d.units > 0));
        let resid: Vec<_> = s
            .dims
            .iter()
            .filter(|d| d.kind == DimKind::Residual)
            .collect();
        assert_eq!(resid.len(), 1, "{rel}: one residual dimension");
        assert_eq!(resid[0].units, 64, "{rel}: d_model");
    }
}
