//! Native runtime vs the burn reference on SsmMoe checkpoints from `init_weights`
//! (sharpened so logits are O(1)): several configurations incl. pruned layers
//! (uneven `d_inner`, expert counts and expert widths), step == prefill, chunked
//! prefill, mixed storage formats, every SIMD path.

#![allow(clippy::too_many_arguments)]

mod rt_common;

use rt_common::*;
use squish_core::checkpoint::{WeightTensor, Weights};
use squish_core::config::{ModelConfig, SsmMoeConfig};
use squish_core::model::ssm_moe_weights::{expert_name, init_weights, router_name, ssm_name};
use squish_kernels::SimdLevel;
use squish_kernels::runtime::{Runtime, RuntimeOptions};

fn cfg(
    d: usize,
    layers: usize,
    di: usize,
    n: usize,
    k: usize,
    r: usize,
    e: usize,
    top: usize,
    h: usize,
) -> SsmMoeConfig {
    SsmMoeConfig {
        d_model: d,
        n_layers: layers,
        vocab_size: 96,
        seq_len: 128,
        d_inner: di,
        d_state: n,
        d_conv: k,
        dt_rank: r,
        n_experts: e,
        top_k: top,
        expert_hidden: h,
        norm_eps: 1e-5,
    }
}

/// Keeps the first `keep` columns of a 2-D tensor.
fn keep_cols(w: &mut Weights, name: &str, keep: usize) {
    let (s, v) = f32s(w, name);
    let nv: Vec<f32> = v.chunks(s[1]).flat_map(|r| r[..keep].to_vec()).collect();
    put(w, name, vec![s[0], keep], nv);
}

/// Scales the embedding (×20) and other matmul weights (×3) so the random model has
/// O(1) logits and non-trivial routing; random norm gains and D.
fn sharpen(w: &mut Weights) {
    let names: Vec<String> = w.iter().map(|(n, _)| n.clone()).collect();
    let mut rng = squish_core::data::Rng::new(7);
    for n in names {
        let (s, v) = f32s(w, &n);
        let f = if n == "tok_embeddings.weight" {
            20.0
        } else if s.len() == 2 && n.ends_with(".weight") && !n.contains("conv") {
            3.0
        } else {
            1.0
        };
        let mut v: Vec<f32> = v.iter().map(|x| x * f).collect();
        if n.ends_with("norm.weight") || n.ends_with(".D") || n.ends_with("conv.bias") {
            v.iter_mut().for_each(|x| *x += (rng.f32() - 0.5) * 0.4);
        }
        put(w, &n, s, v);
    }
}

/// Prunes layer `i` to inner width `keep` (of `di`), expert `e` to hidden `eh`, and
/// drops the layer's last expert when `drop_last`.
fn prune(
    w: &mut Weights,
    c: &SsmMoeConfig,
    i: usize,
    keep: usize,
    e: usize,
    eh: usize,
    drop_last: bool,
) {
    let di = c.d_inner;
    let rows: Vec<usize> = (0..keep).chain(di..di + keep).collect();
    keep_rows(w, &ssm_name(i, "in_proj.weight"), &rows);
    let first: Vec<usize> = (0..keep).collect();
    for p in [
        "conv.weight",
        "conv.bias",
        "dt_proj.weight",
        "dt_proj.bias",
        "A_log",
        "D",
    ] {
        keep_rows(w, &ssm_name(i, p), &first);
    }
    keep_cols(w, &ssm_name(i, "x_proj.weight"), keep);
    keep_cols(w, &ssm_name(i, "out_proj.weight"), keep);
    let hk: Vec<usize> = (0..eh).collect();
    keep_rows(w, &expert_name(i, e, "w1"), &hk);
    keep_rows(w, &expert_name(i, e, "w3"), &hk);
    keep_cols(w, &expert_name(i, e, "w2"), eh);
    if drop_last {
        let last = c.n_experts - 1;
        for m in ["w1", "w2", "w3"] {
            w.remove(&expert_name(i, last, m));
        }
        keep_rows(w, &router_name(i), &(0..last).collect::<Vec<_>>());
    }
}

fn configs() -> Vec<(String, SsmMoeConfig, Weights)> {
    let mut out = Vec::new();
    let c = cfg(64, 2, 128, 16, 4, 4, 4, 2, 96);
    let mut w = init_weights(&c, 1).unwrap();
    sharpen(&mut w);
    out.push(("base d64 E4 top2".into(), c, w));
    let c = cfg(48, 3, 96, 8, 3, 6, 6, 2, 80);
    let mut w = init_weights(&c, 2).unwrap();
    sharpen(&mut w);
    prune(&mut w, &c, 0, 70, 1, 37, true);
    prune(&mut w, &c, 2, 96, 4, 13, false);
    out.push(("pruned d48 uneven".into(), c, w));
    let c = cfg(32, 2, 64, 4, 1, 2, 3, 1, 40);
    let mut w = init_weights(&c, 3).unwrap();
    sharpen(&mut w);
    out.push(("d_conv=1 top1".into(), c, w));
    let c = cfg(40, 1, 72, 16, 4, 3, 5, 5, 33);
    let mut w = init_weights(&c, 4).unwrap();
    sharpen(&mut w);
    out.push(("top_k=E odd widths".into(), c, w));
    out
}

fn runtime(c: &SsmMoeConfig, w: &Weights, opts: RuntimeOptions) -> Runtime {
    Runtime::from_weights(&ModelConfig::SsmMoe(c.clone()), w, opts).unwrap()
}

#[test]
fn f32_logits_match_burn_over_96_positions() {
    for (name, c, w) in configs() {
        let toks = tokens(96, c.vocab_size, 11);
        let want = burn_ssm(&c, &w, &toks);
        let mut rt = runtime(&c, &w, RuntimeOptions::default());
        let mut got = vec![0.0; want.len()];
        rt.prefill_all(&toks, &mut got).unwrap();
        let e = max_diff(&got, &want);
        println!(
            "{name}: prefill max|Δ| = {e:.2e} (max |logit| {:.2})",
            max_abs(&want)
        );
        assert!(
            max_abs(&want) > 1.0,
            "{name}: logits too small to be a meaningful test"
        );
        assert!(e <= 1e-4, "{name}: prefill vs burn {e}");
        rt.reset();
        let mut stepped = Vec::with_capacity(want.len());
        for &t in &toks {
            stepped.extend_from_slice(rt.step(t).unwrap());
        }
        let e2 = max_diff(&stepped, &want);
        let e3 = max_diff(&stepped, &got);
        println!("{name}: step max|Δ| vs burn = {e2:.2e}, vs prefill = {e3:.2e}");
        assert!(e2 <= 1e-4 && e3 <= 1e-4, "{name}: step {e2} / {e3}");
    }
}

#[test]
fn chunked_prefill_and_last_logits_equal_full_prefill() {
    for (name, c, w) in configs() {
        let toks = tokens(70, c.vocab_size, 5);
        let mut full = runtime(&c, &w, RuntimeOptions::default());
        let mut all = vec![0.0; toks.len() * c.vocab_size];
        full.prefill_all(&toks, &mut all).unwrap();
        let opts = RuntimeOptions {
            max_batch: 9,
            ..RuntimeOptions::default()
        };
        let mut ch = runtime(&c, &w, opts);
        let last = ch.prefill(&toks[..40]).unwrap().to_vec();
        let v = c.vocab_size;
        assert!(max_diff(&last, &all[39 * v..40 * v]) <= 1e-5, "{name}");
        let last = ch.prefill(&toks[40..]).unwrap().to_vec();
        let e = max_diff(&last, &all[69 * v..]);
        assert!(e <= 1e-5, "{name}: chunked {e}");
    }
}

#[test]
fn mixed_formats_match_burn_on_dequantized_weights() {
    let fmts = [Fmt::F16, Fmt::Q8, Fmt::Q8Asym, Fmt::Q4, Fmt::Q4Asym];
    for (name, c, w) in configs() {
        let q = quantize(&w, 32, |n| {
            let h = n
                .bytes()
                .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
            (h % 6 < 5).then(|| fmts[h % 5])
        });
        // Small tensors stored F16 too.
        let mut q2 = Weights::new();
        for (n, t) in q.iter() {
            let mut t = t.clone();
            if n.ends_with("norm.weight") || n.ends_with(".D") || n.ends_with("conv.weight") {
                t.data = squish_core::checkpoint::TensorData::F16(
                    t.to_f32().iter().map(|x| half::f16::from_f32(*x)).collect(),
                );
            }
            q2.insert(n.clone(), t);
        }
        let deq: Weights = {
            let mut d = Weights::new();
            for (n, t) in q2.iter() {
                d.insert(
                    n.clone(),
                    WeightTensor::f32(t.shape.clone(), t.to_f32()).unwrap(),
                );
            }
            d
        };
        let toks = tokens(64, c.vocab_size, 3);
        let want = burn_ssm(&c, &deq, &toks);
        let mut rt = runtime(&c, &q2, RuntimeOptions::default());
        println!("{name}: {}", rt.format_summary());
        let mut got = vec![0.0; want.len()];
        rt.prefill_all(&toks, &mut got).unwrap();
        let e = max_diff(&got, &want);
        println!("{name}: mixed-format max|Δ| vs burn-on-dequantized = {e:.2e}");
        assert!(e <= 1e-4, "{name}: {e}");
    }
}

#[test]
fn every_simd_path_matches_scalar() {
    for (name, c, w) in configs() {
        let toks = tokens(64, c.vocab_size, 9);
        let run = |level| {
            let mut rt = runtime(
                &c,
                &w,
                RuntimeOptions {
                    level: Some(level),
                    ..RuntimeOptions::default()
                },
            );
            assert_eq!(rt.level(), level);
            let mut got = vec![0.0; toks.len() * c.vocab_size];
            rt.prefill_all(&toks, &mut got).unwrap();
            got
        };
        let reference = run(SimdLevel::Scalar);
        for level in squish_kernels::dispatch::supported() {
            let e = max_diff(&run(level), &reference);
            println!("{name}: {} vs scalar max|Δ| = {e:.2e}", level.as_str());
            assert!(e <= 1e-4, "{name} {level:?}: {e}");
        }
    }
}
