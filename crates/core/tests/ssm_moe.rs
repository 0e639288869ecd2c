//! SsmMoe: recurrent decode equals the full-sequence forward, the chunked scan equals the
//! sequential one, weights round-trip, and initialisation is deterministic.

use squish_core::config::SsmMoeConfig;
use squish_core::model::CpuBackend;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_step::SsmMoeStepper;
use squish_core::model::ssm_moe_weights::{expert_name, init_weights};
use squish_core::model::tensor_to_vec;

fn cfg() -> SsmMoeConfig {
    SsmMoeConfig {
        d_model: 32,
        n_layers: 2,
        vocab_size: 64,
        seq_len: 128,
        d_inner: 48,
        d_state: 8,
        d_conv: 4,
        dt_rank: 4,
        n_experts: 3,
        top_k: 2,
        expert_hidden: 24,
        norm_eps: 1e-5,
    }
}

fn tokens(n: usize, vocab: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % vocab).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn step_decode_equals_full_forward_over_128_positions() {
    let c = cfg();
    let mut w = init_weights(&c, 5).unwrap();
    // Make the experts' widths uneven, as pruning will.
    for name in [expert_name(1, 2, "w1"), expert_name(1, 2, "w3")] {
        let t = w.get(&name).unwrap().clone();
        let keep = 10 * c.d_model;
        w.insert(
            name,
            squish_core::checkpoint::WeightTensor::f32(
                vec![10, c.d_model],
                t.to_f32()[..keep].to_vec(),
            )
            .unwrap(),
        );
    }
    let t2 = w.get(&expert_name(1, 2, "w2")).unwrap().to_f32();
    let narrowed: Vec<f32> = t2
        .chunks(c.expert_hidden)
        .flat_map(|r| r[..10].to_vec())
        .collect();
    w.insert(
        expert_name(1, 2, "w2"),
        squish_core::checkpoint::WeightTensor::f32(vec![c.d_model, 10], narrowed).unwrap(),
    );

    let device = CpuBackend::default().device();
    let model = SsmMoe::from_weights(&c, &w, &device, ScanMode::Sequential).unwrap();
    let toks = tokens(128, c.vocab_size as u32);
    let full = tensor_to_vec(model.forward(std::slice::from_ref(&toks)).unwrap().logits).unwrap(); // [1, 128, vocab]
    let mut stepper = SsmMoeStepper::new(&model);
    let mut worst = 0.0f32;
    for (pos, &t) in toks.iter().enumerate() {
        let step = tensor_to_vec(stepper.step_tensor(t).unwrap()).unwrap();
        worst = worst.max(max_abs_diff(
            &step,
            &full[pos * c.vocab_size..(pos + 1) * c.vocab_size],
        ));
    }
    assert!(worst <= 1e-4, "max |Δlogit| = {worst}");
}

#[test]
fn chunked_scan_equals_sequential_scan() {
    let c = cfg();
    let w = init_weights(&c, 9).unwrap();
    let device = CpuBackend::default().device();
    let toks = vec![tokens(70, 64), tokens(70, 61)];
    let seq = SsmMoe::from_weights(&c, &w, &device, ScanMode::Sequential).unwrap();
    let a = tensor_to_vec(seq.forward(&toks).unwrap().logits).unwrap();
    for k in [1, 7, 16, 70] {
        let ch = SsmMoe::from_weights(&c, &w, &device, ScanMode::Chunked(k)).unwrap();
        let b = tensor_to_vec(ch.forward(&toks).unwrap().logits).unwrap();
        let d = max_abs_diff(&a, &b);
        assert!(d <= 1e-4, "chunk {k}: max |Δlogit| = {d}");
    }
}

#[test]
fn init_is_deterministic_and_weights_round_trip() {
    let c = cfg();
    let a = init_weights(&c, 3).unwrap();
    assert_eq!(a, init_weights(&c, 3).unwrap());
    assert_ne!(a, init_weights(&c, 4).unwrap());
    let device = CpuBackend::default().device();
    let m = SsmMoe::from_weights(&c, &a, &device, ScanMode::Chunked(8)).unwrap();
    assert_eq!(m.to_weights().unwrap(), a);
}

#[test]
fn default_phase7_size_is_in_the_seed_range() {
    let c = SsmMoeConfig {
        d_model: 64,
        n_layers: 3,
        vocab_size: 512,
        seq_len: 256,
        d_inner: 128,
        d_state: 16,
        d_conv: 4,
        dt_rank: 4,
        n_experts: 4,
        top_k: 2,
        expert_hidden: 72,
        norm_eps: 1e-5,
    };
    let n = init_weights(&c, 1).unwrap().param_count();
    assert!((280_000..=310_000).contains(&n), "{n} parameters");
}
