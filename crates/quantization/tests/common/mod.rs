//! Fixtures shared by squish-quant's integration tests: a seeded Gaussian and a tiny random
//! Llama checkpoint (dim 16, GQA 4:2 heads, hidden 44, vocab 40).

#![allow(dead_code)] // each test binary uses a subset

pub mod qat;

use squish_core::checkpoint::{Checkpoint, WeightTensor, Weights};
use squish_core::config::{LlamaConfig, ModelConfig};
use squish_core::data::Rng;

/// A standard normal sample (Box–Muller).
pub fn gauss(rng: &mut Rng) -> f32 {
    let (u1, u2) = (rng.f32().max(1e-7), rng.f32());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// A checkpoint of `config` and `weights` without provenance, metrics or tokenizer.
pub fn ckpt(config: ModelConfig, weights: Weights) -> Checkpoint {
    Checkpoint {
        config,
        weights,
        provenance: Default::default(),
        metrics: Default::default(),
        tokenizer: None,
    }
}

/// A tiny random Llama: matrices N(0, 0.3²), norm gains 1 + N(0, gain_std²), two layers.
pub fn tiny_llama(seed: u64, gain_std: f32) -> Checkpoint {
    let c = LlamaConfig {
        dim: 16,
        hidden_dim: 44,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 40,
        seq_len: 32,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let mut rng = Rng::new(seed);
    let mut w = Weights::new();
    let mut put = |name: String, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let gain = shape.len() == 1;
        let v = (0..n)
            .map(|_| {
                let g = gauss(&mut rng);
                if gain { 1.0 + gain_std * g } else { 0.3 * g }
            })
            .collect();
        w.insert(name, WeightTensor::f32(shape, v).unwrap());
    };
    put("tok_embeddings.weight".into(), vec![40, 16]);
    put("norm.weight".into(), vec![16]);
    for i in 0..2 {
        for (n, s) in [
            ("attention_norm.weight", vec![16]),
            ("attention.wq.weight", vec![16, 16]),
            ("attention.wk.weight", vec![8, 16]),
            ("attention.wv.weight", vec![8, 16]),
            ("attention.wo.weight", vec![16, 16]),
            ("ffn_norm.weight", vec![16]),
            ("feed_forward.w1.weight", vec![44, 16]),
            ("feed_forward.w2.weight", vec![16, 44]),
            ("feed_forward.w3.weight", vec![44, 16]),
        ] {
            put(format!("layers.{i}.{n}"), s);
        }
    }
    ckpt(ModelConfig::Llama(c), w)
}
