//! The worker pool changes no bit: both families, F32 and INT4 (float and int8 activations),
//! every SIMD path present, give identical logits at 1, 2 and 3 threads — in chunked prefill
//! (the second chunk starts at position 128, so attention's cost split is uneven) and in decode.
//! The models have the benchmark shapes, so the pool's size thresholds are crossed; SsmMoe's
//! conv/scan channel parts are also checked at a `d_inner` that is not a multiple of 8.

mod rt_common;

use rt_common::{Fmt, quantize, random_llama, tokens};
use squish_core::checkpoint::Weights;
use squish_core::config::{LlamaConfig, ModelConfig, SsmMoeConfig};
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::quant::QBits;
use squish_kernels::runtime::{Runtime, RuntimeOptions, rtn_quantize};
use squish_kernels::{Activations, SimdLevel, dispatch};

/// Every position's logits of a 160-token prefill (chunks of 128), then 6 decoded tokens' logits.
fn logits(c: &ModelConfig, w: &Weights, opts: RuntimeOptions) -> Vec<f32> {
    let mut rt = Runtime::from_weights(c, w, opts).unwrap();
    let toks = tokens(160, c.vocab_size(), 7);
    let mut out = vec![0.0; toks.len() * c.vocab_size()];
    rt.prefill_all(&toks, &mut out).unwrap();
    for t in 0..6u32 {
        out.extend_from_slice(rt.step(t * 5 + 1).unwrap());
    }
    out
}

/// `w`'s logits at 2 and 3 threads equal its 1-thread logits, bit for bit.
fn same_for_any_thread_count(
    name: &str,
    c: &ModelConfig,
    w: &Weights,
    level: SimdLevel,
    act: Activations,
) {
    let opts = |threads| RuntimeOptions {
        level: Some(level),
        act,
        threads,
        max_batch: 128,
    };
    let one = logits(c, w, opts(1));
    assert!(one.iter().all(|v| v.is_finite()), "{name}");
    for threads in [2, 3] {
        let many = logits(c, w, opts(threads));
        let diff = one.iter().zip(&many).filter(|(a, b)| a != b).count();
        assert!(
            diff == 0,
            "{name} {level:?}: {diff} of {} logits differ at {threads} threads",
            one.len()
        );
    }
}

fn check(name: &str, c: &ModelConfig, w: &Weights) {
    let q4 = rtn_quantize(w, QBits::Int4, 32).unwrap();
    for level in dispatch::supported() {
        for (fmt, ws, act) in [
            ("f32", w, Activations::F32),
            ("int4", &q4, Activations::F32),
            ("int4+a8", &q4, Activations::Int8),
        ] {
            same_for_any_thread_count(&format!("{name} {fmt}"), c, ws, level, act);
        }
    }
}

#[test]
fn llama_logits_are_identical_for_any_thread_count() {
    // stories260K's shape (GQA 8/4 heads, d 64, FFN 172, vocab 512).
    let c = LlamaConfig {
        dim: 64,
        hidden_dim: 172,
        n_layers: 2,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 256,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let w = random_llama(&c, &[172, 172], 11);
    check("llama", &ModelConfig::Llama(c), &w);
}

#[test]
fn ssm_moe_logits_are_identical_for_any_thread_count() {
    // The phase7 baseline shape, two layers.
    let c: SsmMoeConfig = serde_json::from_str(
        r#"{"d_model":64,"n_layers":2,"vocab_size":512,"seq_len":256,"d_inner":128,"d_state":16,"d_conv":4,"dt_rank":4,"n_experts":4,"top_k":2,"expert_hidden":72,"norm_eps":1e-5}"#,
    )
    .unwrap();
    let w = init_weights(&c, 3).unwrap();
    check("ssm_moe", &ModelConfig::SsmMoe(c.clone()), &w);
    // d_inner 70: channel parts end off the 8-lane grid (scalar tails stay where they were).
    let c = SsmMoeConfig { d_inner: 70, ..c };
    let w = init_weights(&c, 4).unwrap();
    check("ssm_moe d_inner 70", &ModelConfig::SsmMoe(c.clone()), &w);
    // A mixed-precision file: experts' gate INT4 and up INT8 (the SwiGLU's unstacked form, its
    // gate/up values in each part's scratch), the router F16, the rest F32.
    let mixed = quantize(&w, 32, |n| {
        if n.ends_with("w1.weight") {
            Some(Fmt::Q4)
        } else if n.ends_with("w3.weight") {
            Some(Fmt::Q8)
        } else if n.contains("router") {
            Some(Fmt::F16)
        } else {
            None
        }
    });
    for level in dispatch::supported() {
        for act in [Activations::F32, Activations::Int8] {
            let name = format!("ssm_moe mixed {act:?}");
            same_for_any_thread_count(&name, &ModelConfig::SsmMoe(c.clone()), &mixed, level, act);
        }
    }
}
