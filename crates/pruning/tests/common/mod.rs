//! Tiny random models and data for the pruning tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use burn::tensor::Device;
use squish_core::checkpoint::{Checkpoint, Provenance, WeightTensor, Weights};
use squish_core::config::{LlamaConfig, ModelConfig, SsmMoeConfig};
use squish_core::data::Rng;
use squish_core::model::llama::layer_tensor_names;
use squish_core::model::ssm_moe_weights::init_weights;
use squish_prune::net::Net;

pub fn ssm_config() -> SsmMoeConfig {
    SsmMoeConfig {
        d_model: 16,
        n_layers: 2,
        vocab_size: 64,
        seq_len: 32,
        d_inner: 24,
        d_state: 4,
        d_conv: 4,
        dt_rank: 2,
        n_experts: 4,
        top_k: 2,
        expert_hidden: 24,
        norm_eps: 1e-5,
    }
}

pub fn llama_config() -> LlamaConfig {
    LlamaConfig {
        dim: 16,
        hidden_dim: 24,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 64,
        seq_len: 32,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    }
}

fn ckpt(config: ModelConfig, weights: Weights) -> Checkpoint {
    Checkpoint {
        config,
        weights,
        provenance: Provenance {
            stage: "test".into(),
            ..Default::default()
        },
        metrics: BTreeMap::new(),
        tokenizer: None,
    }
}

/// A random SsmMoe whose norms and biases are perturbed too (so zeroing tests are not trivial).
pub fn tiny_ssm(seed: u64) -> Checkpoint {
    let c = ssm_config();
    let mut w = init_weights(&c, seed).unwrap();
    let mut rng = Rng::new(seed ^ 77);
    let names: Vec<String> = w.iter().map(|(n, _)| n.clone()).collect();
    for n in names {
        if n.ends_with("conv.bias") || n.ends_with(".D") {
            let t = w.get(&n).unwrap().clone();
            let v: Vec<f32> = t.to_f32().iter().map(|x| x + rng.f32() - 0.5).collect();
            w.insert(n, WeightTensor::f32(t.shape, v).unwrap());
        }
    }
    // Larger expert/out weights so that logits depend visibly on every group.
    let names: Vec<String> = w.iter().map(|(n, _)| n.clone()).collect();
    for n in names {
        let t = w.get(&n).unwrap().clone();
        if t.shape.len() == 2 && !n.starts_with("tok_") {
            let v: Vec<f32> = t.to_f32().iter().map(|x| x * 8.0).collect();
            w.insert(n, WeightTensor::f32(t.shape, v).unwrap());
        }
    }
    ckpt(ModelConfig::SsmMoe(c), w)
}

pub fn tiny_llama(seed: u64) -> Checkpoint {
    let c = llama_config();
    let mut rng = Rng::new(seed);
    let mut w = Weights::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (rng.f32() - 0.5) * scale).collect();
        w.insert(name, WeightTensor::f32(shape, v).unwrap());
    };
    let (d, h, kv) = (c.dim, c.hidden_dim, c.n_kv_heads * c.head_size());
    put("tok_embeddings.weight".into(), vec![c.vocab_size, d], 1.0);
    put("norm.weight".into(), vec![d], 2.0);
    for i in 0..c.n_layers {
        let n = layer_tensor_names(i);
        put(n[0].clone(), vec![d], 2.0);
        put(n[1].clone(), vec![d, d], 1.0);
        put(n[2].clone(), vec![kv, d], 1.0);
        put(n[3].clone(), vec![kv, d], 1.0);
        put(n[4].clone(), vec![d, d], 1.0);
        put(n[5].clone(), vec![d], 2.0);
        put(n[6].clone(), vec![h, d], 1.0);
        put(n[7].clone(), vec![d, h], 1.0);
        put(n[8].clone(), vec![h, d], 1.0);
    }
    ckpt(ModelConfig::Llama(c), w)
}

/// `ck` (a Llama) with a separate classifier: random `output.weight`, `shared_classifier = false`.
pub fn untied(mut ck: Checkpoint) -> Checkpoint {
    let ModelConfig::Llama(c) = &mut ck.config else {
        panic!("untied: not a Llama checkpoint");
    };
    c.shared_classifier = false;
    let d = ck.weights.get("tok_embeddings.weight").unwrap().shape[1];
    let mut rng = Rng::new(99);
    let v: Vec<f32> = (0..c.vocab_size * d).map(|_| rng.f32() - 0.5).collect();
    ck.weights.insert(
        "output.weight",
        WeightTensor::f32(vec![c.vocab_size, d], v).unwrap(),
    );
    ck
}

pub fn tokens(seed: u64, n: usize, vocab: u32) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(vocab as usize) as u32).collect()
}

pub fn windows(seed: u64, count: usize, len: usize) -> Vec<Vec<u32>> {
    (0..count)
        .map(|i| {
            let mut w = tokens(seed + i as u64, len, 64);
            w[0] = 1;
            w
        })
        .collect()
}

pub fn device() -> Device {
    squish_core::model::CpuBackend::Flex.device()
}

pub fn logits(config: &ModelConfig, w: &Weights, batch: &[Vec<u32>]) -> Vec<f32> {
    let net = Net::build(config, w, &device()).unwrap();
    squish_core::model::tensor_to_vec(net.logits(batch).unwrap()).unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
