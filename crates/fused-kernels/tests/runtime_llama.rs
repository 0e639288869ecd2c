//! Native runtime vs the burn reference on Llama checkpoints: stories260K (shared
//! data) in F32 and INT4, random GQA models with pruned (uneven) FFN widths and a
//! separate classifier, mixed storage formats, step == prefill, every SIMD path,
//! perplexity and greedy generation.

mod rt_common;

use rt_common::*;
use squish_core::checkpoint::Weights;
use squish_core::config::{LlamaConfig, ModelConfig};
use squish_core::eval::{LogitsModel, perplexity};
use squish_core::generate::generate;
use squish_core::llama2c;
use squish_core::model::CpuBackend;
use squish_core::model::llama::Llama;
use squish_core::sample::Sampler;
use squish_core::shared::require_for_test;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};
use squish_kernels::runtime::{Runtime, RuntimeOptions};
use squish_kernels::{Activations, SimdLevel};

fn runtime(c: &LlamaConfig, w: &Weights, opts: RuntimeOptions) -> Runtime {
    Runtime::from_weights(&ModelConfig::Llama(c.clone()), w, opts).unwrap()
}

/// stories260K + tokenizer + the tokenized validation text (or `None`: skipped).
fn stories() -> Option<(LlamaConfig, Weights, Llama2cTokenizer, Vec<u32>)> {
    let model = require_for_test("models/stories260K/stories260K.bin")?;
    let tok = require_for_test("models/stories260K/tok512.bin")?;
    let valid = require_for_test("tinystories/valid.txt")?;
    let (c, w) = llama2c::import(&model).unwrap();
    let t = Llama2cTokenizer::from_file(&tok, c.vocab_size).unwrap();
    let text = std::fs::read_to_string(valid).unwrap();
    // 48 kB of text: enough for 16+ chunks of 256 tokens.
    let cut = text
        .char_indices()
        .nth(48_000)
        .map_or(text.len(), |(i, _)| i);
    let ids = t.encode(&text[..cut], true, false);
    Some((c, w, t, ids))
}

/// Prefill, step-by-step and last-position logits against burn; returns the max errors.
fn check_against_burn(name: &str, c: &LlamaConfig, w: &Weights, toks: &[u32], bound: f32) {
    let want = burn_llama(c, w, toks);
    let mut rt = runtime(c, w, RuntimeOptions::default());
    let mut got = vec![0.0; want.len()];
    rt.prefill_all(toks, &mut got).unwrap();
    let e = max_diff(&got, &want);
    rt.reset();
    let mut stepped = Vec::with_capacity(want.len());
    for &t in toks {
        stepped.extend_from_slice(rt.step(t).unwrap());
    }
    let e2 = max_diff(&stepped, &want);
    let e3 = max_diff(&stepped, &got);
    rt.reset();
    let last = rt.prefill(toks).unwrap().to_vec();
    let e4 = max_diff(&last, &want[want.len() - c.vocab_size..]);
    println!(
        "{name}: {} positions, max|logit| {:.2}; max|Δ| prefill {e:.2e}, step {e2:.2e}, step-vs-prefill {e3:.2e}, last {e4:.2e} [{}]",
        toks.len(),
        max_abs(&want),
        rt.format_summary()
    );
    assert!(
        e <= bound && e2 <= bound && e3 <= bound && e4 <= bound,
        "{name}: {e} {e2} {e3} {e4} > {bound}"
    );
}

#[test]
fn stories260k_f32_matches_burn_over_256_positions() {
    let Some((c, w, _, ids)) = stories() else {
        return;
    };
    check_against_burn("stories260K f32", &c, &w, &ids[..256], 1e-4);
}

#[test]
fn random_gqa_llama_with_pruned_ffn_matches_burn() {
    for (shared, nh, nkv, hidden) in [
        (false, 4, 2, vec![40, 17, 64]),
        (true, 6, 6, vec![33, 33]),
        (false, 2, 1, vec![8]),
    ] {
        let c = LlamaConfig {
            dim: 48,
            hidden_dim: 64,
            n_layers: hidden.len(),
            n_heads: nh,
            n_kv_heads: nkv,
            vocab_size: 77,
            seq_len: 96,
            shared_classifier: shared,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        };
        let w = random_llama(&c, &hidden, 42 + nh as u64);
        let toks = tokens(96, c.vocab_size, 1);
        check_against_burn(
            &format!("random nh={nh} nkv={nkv} ffn={hidden:?}"),
            &c,
            &w,
            &toks,
            1e-4,
        );
        // Chunked prefill (7-token GEMMs) equals one prefill.
        let mut a = runtime(&c, &w, RuntimeOptions::default());
        let mut b = runtime(
            &c,
            &w,
            RuntimeOptions {
                max_batch: 7,
                ..RuntimeOptions::default()
            },
        );
        let la = a.prefill(&toks).unwrap().to_vec();
        let lb = b.prefill(&toks).unwrap().to_vec();
        assert!(max_diff(&la, &lb) <= 1e-5);
        // Past seq_len is an error, not a panic.
        assert!(a.step(0).is_err());
    }
}

#[test]
fn mixed_formats_match_burn_on_dequantized_weights() {
    let c = LlamaConfig {
        dim: 64,
        hidden_dim: 100,
        n_layers: 3,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 90,
        seq_len: 80,
        shared_classifier: false,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let w = random_llama(&c, &[100, 61, 100], 9);
    let fmts = [Fmt::F16, Fmt::Q8, Fmt::Q8Asym, Fmt::Q4, Fmt::Q4Asym];
    for (salt, g) in [(0usize, 32usize), (1, 16), (2, 64)] {
        let q = quantize(&w, g, |n| {
            let h = n
                .bytes()
                .fold(salt, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
            (h % 7 < 6).then(|| fmts[h % 5])
        });
        let deq = dequantized(&q);
        check_against_burn(
            &format!("mixed formats g={g}"),
            &c,
            &q,
            &tokens(80, c.vocab_size, 4),
            1e-4,
        );
        // The runtime on the quantized weights equals burn on their dequantized values.
        let toks = tokens(64, c.vocab_size, 8);
        let want = burn_llama(&c, &deq, &toks);
        let mut rt = runtime(&c, &q, RuntimeOptions::default());
        let mut got = vec![0.0; want.len()];
        rt.prefill_all(&toks, &mut got).unwrap();
        assert!(max_diff(&got, &want) <= 1e-4);
    }
}

fn dequantized(q: &Weights) -> Weights {
    let mut d = Weights::new();
    for (n, t) in q.iter() {
        d.insert(
            n.clone(),
            squish_core::checkpoint::WeightTensor::f32(t.shape.clone(), t.to_f32()).unwrap(),
        );
    }
    d
}

#[test]
fn stories260k_int4_matches_burn_on_dequantized_and_ppl() {
    let Some((c, w, tok, ids)) = stories() else {
        return;
    };
    let q = quantize(&w, 32, |_| Some(Fmt::Q4));
    let deq = dequantized(&q);
    let toks = &ids[..128];
    let want = burn_llama(&c, &deq, toks);
    for act in [Activations::F32, Activations::Int8] {
        let mut rt = runtime(
            &c,
            &q,
            RuntimeOptions {
                act,
                ..RuntimeOptions::default()
            },
        );
        let mut got = vec![0.0; want.len()];
        rt.prefill_all(toks, &mut got).unwrap();
        let e = max_diff(&got, &want);
        println!(
            "stories260K int4-g32 {act:?} activations: max|Δ| vs burn-on-dequantized {e:.2e} (max|logit| {:.2})",
            max_abs(&want)
        );
        let bound = if act == Activations::F32 { 1e-4 } else { 0.5 };
        assert!(e <= bound, "{act:?}: {e}");
    }
    let ctx = 256;
    let n = (16 * ctx).min(ids.len() / ctx * ctx);
    let mut burn = Llama::from_weights(&c, &deq, &CpuBackend::default().device()).unwrap();
    let pb = perplexity(&mut burn, &ids[..n], ctx, tok.bos_id(), 8, |_, _| {}).unwrap();
    for act in [Activations::F32, Activations::Int8] {
        let mut rt = runtime(
            &c,
            &q,
            RuntimeOptions {
                act,
                ..RuntimeOptions::default()
            },
        );
        let pr = perplexity(&mut rt, &ids[..n], ctx, tok.bos_id(), 8, |_, _| {}).unwrap();
        let rel = (pr.ppl / pb.ppl - 1.0).abs();
        println!(
            "stories260K int4 PPL ({} chunks of {ctx}): burn {:.5}, runtime {act:?} {:.5} (rel {rel:.2e})",
            pr.chunks, pb.ppl, pr.ppl
        );
        assert!(rel <= 0.005, "{act:?}: {rel}");
    }
}

#[test]
fn stories260k_f32_ppl_matches_burn() {
    let Some((c, w, tok, ids)) = stories() else {
        return;
    };
    let ctx = 256;
    let n = (16 * ctx).min(ids.len() / ctx * ctx);
    let mut burn = Llama::from_weights(&c, &w, &CpuBackend::default().device()).unwrap();
    let pb = perplexity(&mut burn, &ids[..n], ctx, tok.bos_id(), 8, |_, _| {}).unwrap();
    let mut rt = runtime(&c, &w, RuntimeOptions::default());
    assert_eq!(LogitsModel::vocab_size(&rt), c.vocab_size);
    let pr = perplexity(&mut rt, &ids[..n], ctx, tok.bos_id(), 8, |_, _| {}).unwrap();
    let rel = (pr.ppl / pb.ppl - 1.0).abs();
    println!(
        "stories260K f32 PPL ({} chunks of {ctx}): burn {:.6}, runtime {:.6} (rel {rel:.2e})",
        pr.chunks, pb.ppl, pr.ppl
    );
    assert!(rel <= 1e-4, "{rel}");
}

#[test]
fn stories260k_greedy_generation_matches_llama2c_run_c() {
    let (Some(model), Some(tok), Some(golden)) = (
        require_for_test("models/stories260K/stories260K.bin"),
        require_for_test("models/stories260K/tok512.bin"),
        require_for_test("models/stories260K/greedy_t0_256.txt"),
    ) else {
        return;
    };
    let (c, w) = llama2c::import(&model).unwrap();
    let t = Llama2cTokenizer::from_file(&tok, c.vocab_size).unwrap();
    let mut rt = runtime(&c, &w, RuntimeOptions::default());
    let mut out = Vec::new();
    generate(&mut rt, &t, "", 256, &mut Sampler::new(0.0, 0.9, 1), |p| {
        out.extend_from_slice(p)
    })
    .unwrap();
    out.push(b'\n');
    let want = std::fs::read(golden).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&want)
    );
}

#[test]
fn stories260k_every_simd_path_matches_scalar() {
    let Some((c, w, _, ids)) = stories() else {
        return;
    };
    let q = quantize(&w, 32, |_| Some(Fmt::Q4));
    for (name, wt) in [("f32", &w), ("int4", &q)] {
        let toks = &ids[..128];
        let run = |level| {
            let mut rt = runtime(
                &c,
                wt,
                RuntimeOptions {
                    level: Some(level),
                    ..RuntimeOptions::default()
                },
            );
            let mut got = vec![0.0; toks.len() * c.vocab_size];
            rt.prefill_all(toks, &mut got).unwrap();
            rt.reset();
            let mut stepped = Vec::new();
            for &t in &toks[..32] {
                stepped.extend_from_slice(rt.step(t).unwrap());
            }
            (got, stepped)
        };
        let (ref_p, ref_s) = run(SimdLevel::Scalar);
        for level in squish_kernels::dispatch::supported() {
            let (p, s) = run(level);
            let (e, e2) = (max_diff(&p, &ref_p), max_diff(&s, &ref_s));
            println!(
                "stories260K {name}: {} vs scalar max|Δ| prefill {e:.2e}, step {e2:.2e}",
                level.as_str()
            );
            assert!(e <= 1e-4 && e2 <= 1e-4, "{name} {level:?}: {e} {e2}");
        }
    }
}
