//! Checkpoints as the pruning and mixed-precision stages write them: uneven
//! per-layer widths (odd, down to 1), fewer heads, per-layer expert counts,
//! per-expert hidden widths, and a different storage format / group size per
//! tensor in one file. The runtime must equal burn's `from_weights` forward
//! (F32: ≤ 1e-4; quantized: ≤ 1e-4 against burn on the dequantized weights),
//! on every SIMD path, by prefill and by step. Also covers
//! `Runtime::logits_for_windows` / `Runtime::nll_for_windows`.

mod rt_common;

use rt_common::*;
use squish_core::checkpoint::{WeightTensor, Weights};
use squish_core::config::{LlamaConfig, ModelConfig, SsmMoeConfig};
use squish_core::model::ssm_moe_weights::{expert_name, init_weights, router_name, ssm_name};
use squish_kernels::SimdLevel;
use squish_kernels::runtime::{Runtime, RuntimeOptions};

/// Stores each matmul weight in a format / group chosen by its position in the
/// sorted name list (`salt` rotates the assignment); small tensors become F16 on
/// some salts.
fn mixed(w: &Weights, salt: usize) -> Weights {
    let plan: [(Option<Fmt>, usize); 8] = [
        (None, 0),
        (Some(Fmt::F16), 0),
        (Some(Fmt::Q8), 16),
        (Some(Fmt::Q8Asym), 32),
        (Some(Fmt::Q4), 32),
        (Some(Fmt::Q4Asym), 64),
        (Some(Fmt::Q4), 16),
        (Some(Fmt::Q8), 128),
    ];
    let mut out = Weights::new();
    for (i, (name, t)) in w.iter().enumerate() {
        let matmul =
            t.shape.len() == 2 && name.ends_with(".weight") && !name.ends_with("conv.weight");
        let (fmt, g) = plan[(i + salt) % plan.len()];
        let data = match (matmul, fmt) {
            (true, Some(f)) => quantize_tensor(&t.to_f32(), t.shape[0], t.shape[1], f, g),
            (false, Some(Fmt::F16)) => {
                quantize_tensor(&t.to_f32(), 1, t.to_f32().len(), Fmt::F16, 0)
            }
            _ => t.data.clone(),
        };
        out.insert(
            name.clone(),
            WeightTensor {
                shape: t.shape.clone(),
                data,
            },
        );
    }
    out
}

fn dequantized(q: &Weights) -> Weights {
    let mut d = Weights::new();
    for (n, t) in q.iter() {
        d.insert(
            n.clone(),
            WeightTensor::f32(t.shape.clone(), t.to_f32()).unwrap(),
        );
    }
    d
}

/// Runtime logits by `prefill_all`, and by prefill of the first token + steps.
fn run_both(cfg: &ModelConfig, w: &Weights, level: SimdLevel, toks: &[u32]) -> [Vec<f32>; 2] {
    let opts = RuntimeOptions {
        level: Some(level),
        max_batch: 13,
        ..RuntimeOptions::default()
    };
    let mut rt = Runtime::from_weights(cfg, w, opts).unwrap();
    let v = rt.vocab_size();
    let mut all = vec![0.0; toks.len() * v];
    rt.prefill_all(toks, &mut all).unwrap();
    rt.reset();
    let mut steps = rt.prefill(&toks[..1]).unwrap().to_vec();
    for &t in &toks[1..] {
        steps.extend_from_slice(rt.step(t).unwrap());
    }
    [all, steps]
}

fn levels() -> Vec<SimdLevel> {
    let mut l = vec![SimdLevel::Scalar];
    if squish_kernels::dispatch::detect() != SimdLevel::Scalar {
        l.push(squish_kernels::dispatch::detect());
    }
    l
}

/// F32 vs burn, and mixed formats vs burn on the dequantized weights, all paths.
fn check(label: &str, cfg: &ModelConfig, w: &Weights, burn: impl Fn(&Weights) -> Vec<f32>) {
    let toks = tokens(40, cfg.vocab_size(), 5);
    let mut cases = vec![("f32".to_string(), w.clone(), burn(w))];
    for salt in [0, 3, 5] {
        let q = mixed(w, salt);
        let want = burn(&dequantized(&q));
        cases.push((format!("mixed salt {salt}"), q, want));
    }
    for (name, ws, want) in &cases {
        for level in levels() {
            let [all, steps] = run_both(cfg, ws, level, &toks);
            let (da, ds) = (max_diff(&all, want), max_diff(&steps, want));
            println!(
                "{label} {name} {level:?}: prefill {da:.2e} step {ds:.2e} (max|logit| {:.1})",
                max_abs(want)
            );
            assert!(
                da <= 1e-4 && ds <= 1e-4,
                "{label} {name} {level:?}: {da} / {ds}"
            );
        }
    }
}

#[test]
fn pruned_llama_with_odd_widths_and_fewer_heads_matches_burn() {
    for (dim, nh, nkv, shared, hidden) in [
        (32, 2, 1, false, vec![1, 17, 43]),
        (48, 3, 3, true, vec![43, 1]),
        (32, 1, 1, false, vec![17]),
    ] {
        let c = LlamaConfig {
            dim,
            hidden_dim: 64,
            n_layers: hidden.len(),
            n_heads: nh,
            n_kv_heads: nkv,
            vocab_size: 61,
            seq_len: 48,
            shared_classifier: shared,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        };
        let w = random_llama(&c, &hidden, 11 + dim as u64);
        let toks = tokens(40, c.vocab_size, 5);
        check(
            &format!("llama d{dim} h{nh}/{nkv} ffn {hidden:?}"),
            &ModelConfig::Llama(c.clone()),
            &w,
            |w| burn_llama(&c, w, &toks),
        );
    }
}

/// Prunes SsmMoe layer `i` to inner width `di` and to `experts.len()` experts with
/// those hidden widths (non-prefix index selections).
fn prune_ssm(w: &mut Weights, c: &SsmMoeConfig, i: usize, di: usize, experts: &[usize]) {
    let keep = pick(c.d_inner, di);
    let rows: Vec<usize> = keep
        .iter()
        .copied()
        .chain(keep.iter().map(|r| r + c.d_inner))
        .collect();
    keep_rows(w, &ssm_name(i, "in_proj.weight"), &rows);
    for p in [
        "conv.weight",
        "conv.bias",
        "dt_proj.weight",
        "dt_proj.bias",
        "A_log",
        "D",
    ] {
        keep_rows(w, &ssm_name(i, p), &keep);
    }
    keep_cols(w, &ssm_name(i, "x_proj.weight"), &keep);
    keep_cols(w, &ssm_name(i, "out_proj.weight"), &keep);
    for e in experts.len()..c.n_experts {
        for m in ["w1", "w2", "w3"] {
            w.remove(&expert_name(i, e, m));
        }
    }
    keep_rows(w, &router_name(i), &(0..experts.len()).collect::<Vec<_>>());
    for (e, &h) in experts.iter().enumerate() {
        let hk = pick(c.expert_hidden, h);
        keep_rows(w, &expert_name(i, e, "w1"), &hk);
        keep_rows(w, &expert_name(i, e, "w3"), &hk);
        keep_cols(w, &expert_name(i, e, "w2"), &hk);
    }
}

/// Scales weights so the random model has O(1) logits and non-trivial routing.
fn sharpen(w: &mut Weights) {
    let names: Vec<String> = w.iter().map(|(n, _)| n.clone()).collect();
    for n in names {
        let (s, v) = f32s(w, &n);
        let f = if n == "tok_embeddings.weight" {
            20.0
        } else if s.len() == 2 && n.ends_with(".weight") && !n.contains("conv") {
            3.0
        } else {
            1.0
        };
        put(w, &n, s, v.iter().map(|x| x * f).collect());
    }
}

#[test]
fn pruned_ssm_moe_with_odd_widths_and_expert_counts_matches_burn() {
    let c = SsmMoeConfig {
        d_model: 32,
        n_layers: 3,
        vocab_size: 67,
        seq_len: 64,
        d_inner: 48,
        d_state: 8,
        d_conv: 4,
        dt_rank: 4,
        n_experts: 4,
        top_k: 2,
        expert_hidden: 48,
        norm_eps: 1e-5,
    };
    let mut w = init_weights(&c, 21).unwrap();
    sharpen(&mut w);
    prune_ssm(&mut w, &c, 0, 1, &[17]);
    prune_ssm(&mut w, &c, 1, 17, &[1, 17, 43]);
    prune_ssm(&mut w, &c, 2, 43, &[43, 48, 1, 2]);
    let toks = tokens(40, c.vocab_size, 5);
    check(
        "ssm_moe d_inner 1/17/43, experts 1/3/4",
        &ModelConfig::SsmMoe(c.clone()),
        &w,
        |w| burn_ssm(&c, w, &toks),
    );
}

#[test]
fn window_scoring_equals_prefill_all() {
    let c = LlamaConfig {
        dim: 32,
        hidden_dim: 43,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 50,
        seq_len: 32,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let w = mixed(&random_llama(&c, &[43, 17], 3), 1);
    let cfg = ModelConfig::Llama(c.clone());
    let mut rt = Runtime::from_weights(&cfg, &w, RuntimeOptions::default()).unwrap();
    let windows: Vec<Vec<u32>> = [32usize, 1, 0, 17]
        .iter()
        .enumerate()
        .map(|(i, &n)| tokens(n, c.vocab_size, 30 + i as u64))
        .collect();
    let mut out = Vec::new();
    rt.logits_for_windows(&windows, &mut out).unwrap();
    let mut want = Vec::new();
    let (mut nll, mut count) = (0f64, 0usize);
    for win in windows.iter().filter(|w| !w.is_empty()) {
        rt.reset();
        let mut l = vec![0.0; win.len() * c.vocab_size];
        rt.prefill_all(win, &mut l).unwrap();
        for t in 0..win.len() - 1 {
            let row = &l[t * c.vocab_size..(t + 1) * c.vocab_size];
            let lse = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
            nll += lse - row[win[t + 1] as usize] as f64;
            count += 1;
        }
        want.extend(l);
    }
    assert_eq!(out, want);
    let mut buf = Vec::new();
    let (got_nll, got_count) = rt.nll_for_windows(&windows, &mut buf).unwrap();
    assert_eq!(got_count, count);
    assert!(
        (got_nll - nll).abs() <= 1e-6 * nll.abs().max(1.0),
        "{got_nll} vs {nll}"
    );
    // Too long a window is an error, not a panic.
    let long = vec![tokens(33, c.vocab_size, 1)];
    assert!(rt.logits_for_windows(&long, &mut out).is_err());
}

/// Head pruning keeps `head_size` and changes the head counts per layer (the config keeps the
/// nominal counts): layer 0 loses kv head 0 with its two query heads, layer 1 keeps all.
#[test]
fn per_layer_pruned_heads_match_burn() {
    let c = LlamaConfig {
        dim: 32,
        hidden_dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 61,
        seq_len: 48,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let mut w = random_llama(&c, &[24, 17], 77);
    let hs = c.head_size();
    let n = squish_core::model::llama::layer_tensor_names(0);
    let q_keep: Vec<usize> = (2 * hs..4 * hs).collect(); // query heads 2, 3
    let kv_keep: Vec<usize> = (hs..2 * hs).collect(); // kv head 1
    keep_rows(&mut w, &n[1], &q_keep);
    keep_rows(&mut w, &n[2], &kv_keep);
    keep_rows(&mut w, &n[3], &kv_keep);
    keep_cols(&mut w, &n[4], &q_keep);
    let toks = tokens(40, c.vocab_size, 5);
    check(
        "llama per-layer heads 2/1 + 4/2",
        &ModelConfig::Llama(c.clone()),
        &w,
        |w| burn_llama(&c, w, &toks),
    );
}
