//! Width-pruned checkpoints (fewer residual channels than the config's `d_model` / `dim`, as
//! squish-prune's `d_model` target writes them): the runtime reads the residual width from the
//! embedding's shape and must equal burn's `from_weights` forward (≤ 1e-4, the tolerance of the
//! other runtime equivalence tests), by prefill and by step. The channels removed are exactly the
//! residual dimension of `squish_core::model::structure::describe`, so this also checks that the
//! description names every tensor slice the two engines read on the residual stream.

mod rt_common;

use rt_common::*;
use squish_core::checkpoint::Weights;
use squish_core::config::{LlamaConfig, ModelConfig, SsmMoeConfig};
use squish_core::model::depth::remove_block;
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::model::structure::{DimKind, describe, residual_width};
use squish_kernels::runtime::{Runtime, RuntimeOptions};

/// Keeps the residual channels `keep` in every member of the model's residual dimension.
fn keep_residual(cfg: &ModelConfig, w: &mut Weights, keep: &[usize]) {
    let s = describe(cfg, w).unwrap();
    let resid = s
        .dims
        .iter()
        .find(|d| d.kind == DimKind::Residual)
        .expect("every family has a residual dimension")
        .clone();
    for m in &resid.members {
        match m.axis {
            0 => keep_rows(w, &m.tensor, keep),
            _ => keep_cols(w, &m.tensor, keep),
        }
    }
    let s2 = describe(cfg, w).unwrap();
    s2.check_coverage(w).unwrap();
    assert_eq!(residual_width(w, cfg.vocab_size()).unwrap(), keep.len());
}

/// Runtime logits by `prefill_all` and by prefill + steps, each against burn's.
fn check(label: &str, cfg: &ModelConfig, w: &Weights, want: &[f32], toks: &[u32]) {
    let mut rt = Runtime::from_weights(cfg, w, RuntimeOptions::default()).unwrap();
    let v = rt.vocab_size();
    let mut all = vec![0.0; toks.len() * v];
    rt.prefill_all(toks, &mut all).unwrap();
    rt.reset();
    let mut steps = rt.prefill(&toks[..1]).unwrap().to_vec();
    for &t in &toks[1..] {
        steps.extend_from_slice(rt.step(t).unwrap());
    }
    let (da, ds) = (max_diff(&all, want), max_diff(&steps, want));
    println!(
        "{label}: prefill {da:.2e} step {ds:.2e} (max|logit| {:.1})",
        max_abs(want)
    );
    assert!(da <= 1e-4 && ds <= 1e-4, "{label}: {da} / {ds}");
}

#[test]
fn width_pruned_ssm_moe_matches_burn() {
    let c = SsmMoeConfig {
        d_model: 32,
        n_layers: 2,
        vocab_size: 67,
        seq_len: 64,
        d_inner: 24,
        d_state: 8,
        d_conv: 4,
        dt_rank: 4,
        n_experts: 3,
        top_k: 2,
        expert_hidden: 20,
        norm_eps: 1e-5,
    };
    let cfg = ModelConfig::SsmMoe(c.clone());
    let toks = tokens(30, c.vocab_size, 5);
    for keep in [23, 1] {
        let mut w = init_weights(&c, 7).unwrap();
        // O(1) logits and non-trivial routing from the 0.02-scale initialisation.
        let names: Vec<String> = w.iter().map(|(n, _)| n.clone()).collect();
        for n in names {
            let (s, v) = f32s(&w, &n);
            let f = if n == "tok_embeddings.weight" {
                20.0
            } else {
                3.0
            };
            let f = if s.len() == 2 && !n.contains("conv") {
                f
            } else {
                1.0
            };
            put(&mut w, &n, s, v.iter().map(|x| x * f).collect());
        }
        keep_residual(&cfg, &mut w, &pick(c.d_model, keep));
        let want = burn_ssm(&c, &w, &toks);
        check(
            &format!("ssm_moe d_model 32 → {keep}"),
            &cfg,
            &w,
            &want,
            &toks,
        );
    }
}

#[test]
fn width_pruned_llama_matches_burn_tied_and_untied() {
    for (shared, keep) in [(true, 21), (false, 13)] {
        let c = LlamaConfig {
            dim: 32,
            hidden_dim: 40,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 61,
            seq_len: 48,
            shared_classifier: shared,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        };
        let cfg = ModelConfig::Llama(c.clone());
        let mut w = random_llama(&c, &[40, 17], 3 + keep as u64);
        keep_residual(&cfg, &mut w, &pick(c.dim, keep));
        let toks = tokens(30, c.vocab_size, 9);
        let want = burn_llama(&c, &w, &toks);
        check(
            &format!("llama dim 32 → {keep} (shared classifier {shared})"),
            &cfg,
            &w,
            &want,
            &toks,
        );
    }
}

/// Depth pruning: a 3-block model with its middle block removed (later blocks renamed, config
/// lowered) runs on the runtime as burn runs it, in both families.
#[test]
fn depth_pruned_models_match_burn() {
    let c = SsmMoeConfig {
        d_model: 24,
        n_layers: 3,
        vocab_size: 53,
        seq_len: 48,
        d_inner: 16,
        d_state: 4,
        d_conv: 4,
        dt_rank: 2,
        n_experts: 3,
        top_k: 2,
        expert_hidden: 12,
        norm_eps: 1e-5,
    };
    let mut cfg = ModelConfig::SsmMoe(c.clone());
    let mut w = init_weights(&c, 11).unwrap();
    let names: Vec<String> = w.iter().map(|(n, _)| n.clone()).collect();
    for n in names {
        let (s, v) = f32s(&w, &n);
        if s.len() == 2 && !n.contains("conv") {
            put(&mut w, &n, s, v.iter().map(|x| x * 5.0).collect());
        }
    }
    remove_block(&mut cfg, &mut w, 1).unwrap();
    let ModelConfig::SsmMoe(c2) = &cfg else {
        unreachable!()
    };
    assert_eq!(c2.n_layers, 2);
    let toks = tokens(20, c.vocab_size, 3);
    let want = burn_ssm(c2, &w, &toks);
    check("ssm_moe 3 → 2 blocks", &cfg, &w, &want, &toks);

    let c = LlamaConfig {
        dim: 32,
        hidden_dim: 40,
        n_layers: 3,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 61,
        seq_len: 48,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let mut cfg = ModelConfig::Llama(c.clone());
    let mut w = random_llama(&c, &[40, 17, 40], 5);
    remove_block(&mut cfg, &mut w, 0).unwrap();
    let ModelConfig::Llama(c2) = &cfg else {
        unreachable!()
    };
    let toks = tokens(20, c.vocab_size, 4);
    let want = burn_llama(c2, &w, &toks);
    check("llama 3 → 2 blocks", &cfg, &w, &want, &toks);
}

/// An embedding whose rows disagree with the vocabulary is a clear error, not a panic.
#[test]
fn embedding_of_the_wrong_shape_is_an_error() {
    let c = SsmMoeConfig {
        d_model: 16,
        n_layers: 1,
        vocab_size: 40,
        seq_len: 32,
        d_inner: 16,
        d_state: 4,
        d_conv: 4,
        dt_rank: 2,
        n_experts: 2,
        top_k: 1,
        expert_hidden: 16,
        norm_eps: 1e-5,
    };
    let mut w = init_weights(&c, 1).unwrap();
    keep_rows(
        &mut w,
        "tok_embeddings.weight",
        &(0..39).collect::<Vec<_>>(),
    );
    let err = Runtime::from_weights(&ModelConfig::SsmMoe(c), &w, RuntimeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("tok_embeddings.weight"), "{err}");
}
