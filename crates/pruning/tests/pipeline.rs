//! The stage end to end on tiny random models: refusals, budget, determinism, every importance.

mod common;

use common::*;
use squish_core::checkpoint::{Checkpoint, to_bytes};
use squish_core::train::TrainConfig;
use squish_prune::{
    Allocation, GroupKind, Importance, PruneConfig, PruneData, PruneInput, PruneReport,
};

fn data_for(
    calib: &[Vec<u32>],
    train: &[u32],
    valid: &[u32],
) -> (Vec<Vec<u32>>, Vec<u32>, Vec<u32>) {
    (calib.to_vec(), train.to_vec(), valid.to_vec())
}

fn run(ck: &Checkpoint, cfg: &PruneConfig) -> squish_core::Result<(Checkpoint, PruneReport)> {
    let (calib, train, valid) = data_for(
        &windows(9, 6, 17),
        &tokens(10, 3000, 64),
        &tokens(11, 400, 64),
    );
    let data = PruneData {
        calib: &calib,
        train: &train,
        valid: &valid,
        bos: 1,
    };
    let out = squish_prune::run(&PruneInput { ckpt: ck, data }, cfg, &mut |_| {})?;
    Ok((out.checkpoint, out.report))
}

fn base_cfg(targets: Vec<GroupKind>) -> PruneConfig {
    PruneConfig {
        ratio: 0.3,
        targets,
        min_width: 2,
        eval_ctx: 16,
        eval_chunks: 4,
        calib_windows: 6,
        ..PruneConfig::default()
    }
}

fn recovery() -> TrainConfig {
    TrainConfig {
        steps: 2,
        batch_size: 2,
        seq_len: 16,
        lr: 1e-3,
        min_lr: 0.0,
        warmup_steps: 0,
        weight_decay: 0.0,
        grad_clip: 1.0,
        balance_coef: 0.01,
        distill_alpha: 0.5,
        distill_temperature: 1.0,
        eval_every: 0,
        eval_chunks: 2,
        seed: 3,
        adam_epsilon: squish_core::train::DEFAULT_ADAM_EPSILON,
        micro_batches: squish_core::train::DEFAULT_MICRO_BATCHES,
    }
}

#[test]
fn ssm_channels_refused_while_preserved() {
    let cfg = base_cfg(vec![GroupKind::SsmChannels]);
    let err = run(&tiny_ssm(1), &cfg).unwrap_err().to_string();
    assert!(err.contains("preserve_ssm"), "{err}");
    let cfg = PruneConfig {
        preserve_ssm: false,
        ..cfg
    };
    let (out, rep) = run(&tiny_ssm(1), &cfg).unwrap();
    // SSM channels alone cannot reach 30% here (min_width binds); they are cut to the minimum.
    assert!(rep.achieved_ratio > 0.2, "{rep:?}");
    assert!(out.weights.get("layers.0.ssm.D").unwrap().shape[0] < 24);
    let err = run(&tiny_ssm(1), &base_cfg(vec![GroupKind::Heads]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Heads"), "{err}");
}

#[test]
fn ratio_is_reached_for_every_importance_and_allocation() {
    let ck = tiny_ssm(2);
    for importance in [
        Importance::MagnitudeL1,
        Importance::MagnitudeL2,
        Importance::Wanda,
        Importance::Taylor,
    ] {
        for allocation in [Allocation::Global, Allocation::Uniform] {
            let cfg = PruneConfig {
                importance,
                allocation,
                ..base_cfg(vec![GroupKind::MoeChannels, GroupKind::Experts])
            };
            let (out, rep) = run(&ck, &cfg).unwrap();
            assert!(
                (rep.achieved_ratio - 0.3).abs() < 0.06,
                "{importance:?}/{allocation:?}: achieved {}",
                rep.achieved_ratio
            );
            assert_eq!(out.weights.param_count(), rep.params_after);
            assert_eq!(out.provenance.stage, "prune");
            assert!(rep.rounds[0].valid_nats_before_recovery.is_some());
        }
    }
}

#[test]
fn llama_heads_and_ffn_with_rounding_and_rounds() {
    let cfg = PruneConfig {
        importance: Importance::Wanda,
        round_to: 4,
        rounds: 2,
        min_width: 4,
        recover: Some(recovery()),
        ..base_cfg(vec![GroupKind::FfnChannels, GroupKind::Heads])
    };
    let (out, rep) = run(&tiny_llama(3), &cfg).unwrap();
    assert!(
        (rep.achieved_ratio - 0.3).abs() < 0.1,
        "{}",
        rep.achieved_ratio
    );
    assert_eq!(rep.rounds.len(), 2);
    assert!(rep.rounds.iter().all(|r| r.recovery_log.len() == 2));
    for (name, &w) in &rep.widths_after {
        if name.ends_with("feed_forward.hidden") {
            assert_eq!(w % 4, 0, "{name} = {w}");
        }
    }
    assert!(out.weights.param_count() < tiny_llama(3).weights.param_count());
}

#[test]
fn same_inputs_and_seed_give_identical_bytes() {
    let cfg = PruneConfig {
        importance: Importance::Taylor,
        recover: Some(recovery()),
        seed: 7,
        ..base_cfg(vec![GroupKind::MoeChannels, GroupKind::Experts])
    };
    let ck = tiny_ssm(4);
    let (a, _) = run(&ck, &cfg).unwrap();
    let (b, _) = run(&ck, &cfg).unwrap();
    assert_eq!(to_bytes(&a).unwrap(), to_bytes(&b).unwrap());
}

#[test]
fn config_serde_defaults_and_names() {
    let cfg: PruneConfig = serde_json::from_str(
        r#"{"ratio":0.4,"importance":"magnitude_l1","targets":["moe_channels","experts"],"allocation":"uniform"}"#,
    )
    .unwrap();
    assert!(cfg.preserve_ssm);
    assert_eq!(cfg.importance, Importance::MagnitudeL1);
    assert_eq!(cfg.allocation, Allocation::Uniform);
    assert!(serde_json::from_str::<PruneConfig>(r#"{"bogus":1}"#).is_err());
}

/// Width (`d_model`) pruning end to end in both families, by every calibrated importance:
/// the residual width shrinks, the budget (non-embedding) is met, the norms are rescaled (ε ×
/// d/d' in the output config) and the result loads and evaluates.
#[test]
fn width_pruning_in_both_families() {
    for ck in [tiny_ssm(3), untied(tiny_llama(2))] {
        for importance in [
            Importance::Activation,
            Importance::Taylor,
            Importance::Wanda,
        ] {
            let cfg = PruneConfig {
                importance,
                recover: Some(recovery()),
                ..base_cfg(vec![GroupKind::DModel])
            };
            let (out, rep) = run(&ck, &cfg).unwrap();
            let d = rep.widths_after["d_model"];
            assert_eq!(rep.widths_before["d_model"], 16);
            assert!((2..16).contains(&d), "{importance:?}: d_model {d}");
            assert!(
                (rep.achieved_ratio - 0.3).abs() < 0.1,
                "{importance:?}: achieved {}",
                rep.achieved_ratio
            );
            let eps = out.config.norm_eps() as f64;
            let want = ck.config.norm_eps() as f64 * 16.0 / d as f64;
            assert!((eps - want).abs() < 1e-9 * want.max(1.0), "{eps} vs {want}");
            assert_eq!(
                out.weights.get("tok_embeddings.weight").unwrap().shape,
                vec![64, d]
            );
            let nats = rep.rounds[0].valid_nats_after_recovery.unwrap();
            assert!(nats.is_finite(), "{importance:?}: {nats}");
        }
    }
}

/// Ratio 0 with the width target is the identity: same weights, same config.
#[test]
fn width_pruning_at_ratio_zero_is_the_identity() {
    for ck in [tiny_ssm(4), tiny_llama(4)] {
        for importance in [Importance::Activation, Importance::MagnitudeL2] {
            let cfg = PruneConfig {
                ratio: 0.0,
                importance,
                ..base_cfg(vec![GroupKind::DModel])
            };
            let (out, rep) = run(&ck, &cfg).unwrap();
            assert_eq!(out.weights, ck.weights, "{importance:?}");
            assert_eq!(out.config, ck.config);
            assert_eq!(rep.params_after, rep.params_before);
        }
    }
}

/// Without norm rescaling the config's ε is left alone.
#[test]
fn width_pruning_without_rescaled_norms_keeps_eps() {
    let ck = tiny_ssm(5);
    let cfg = PruneConfig {
        rescale_norms: false,
        importance: Importance::Activation,
        ..base_cfg(vec![GroupKind::DModel])
    };
    let (out, rep) = run(&ck, &cfg).unwrap();
    assert!(rep.widths_after["d_model"] < 16);
    assert_eq!(out.config, ck.config);
}

#[test]
fn depth_pruning_removes_the_lowest_kl_block_then_channels_and_recovers() {
    let ck = tiny_ssm(6);
    let cfg = PruneConfig {
        ratio: 0.6,
        remove_blocks: 1,
        recover: Some(recovery()),
        ..base_cfg(vec![GroupKind::MoeChannels])
    };
    let (out, rep) = run(&ck, &cfg).unwrap();
    assert_eq!(out.config.n_layers(), 1, "one of two blocks removed");
    assert_eq!(rep.removed_blocks.len(), 1);
    assert!(rep.removed_blocks[0].1 > 0.0, "{:?}", rep.removed_blocks);
    assert!(
        rep.achieved_ratio > 0.5,
        "channels removed the rest: {rep:?}"
    );
    assert_eq!(rep.rounds[0].recovery_log.len(), 2);
    let (again, _) = run(&ck, &cfg).unwrap();
    assert_eq!(
        to_bytes(&out).unwrap(),
        to_bytes(&again).unwrap(),
        "deterministic"
    );
    let all = PruneConfig {
        remove_blocks: 2,
        ..cfg
    };
    let err = run(&ck, &all).unwrap_err().to_string();
    assert!(err.contains("remove_blocks"), "{err}");
}
