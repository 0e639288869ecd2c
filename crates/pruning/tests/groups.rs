//! Dependency groups derived from the structural description: coverage, shape consistency and
//! exact equivalence of removal with zeroing.

mod common;

use common::*;
use squish_core::checkpoint::Checkpoint;
use squish_core::model::structure::{DimKind, describe};
use squish_prune::groups::{apply_plan, zero_units};

/// Drops units {1, 3, 4, ...every third} of every dim of `kinds`, and zeroes them in a copy;
/// the two models must give the same logits.
fn check_equivalence(ck: &Checkpoint, kinds: &[DimKind]) {
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
    let s2 = describe(&ck.config, &pruned).unwrap();
    s2.check_coverage(&pruned).unwrap();
    let batch = windows(5, 2, 12);
    let a = logits(&ck.config, &pruned, &batch);
    let b = logits(&ck.config, &zeroed, &batch);
    let full = logits(&ck.config, &ck.weights, &batch);
    let diff = max_abs_diff(&a, &b);
    assert!(diff < 1e-5, "{kinds:?}: pruned vs zeroed differ by {diff}");
    assert!(
        max_abs_diff(&a, &full) > 1e-3,
        "{kinds:?}: removing units should change the model"
    );
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
    }
}
