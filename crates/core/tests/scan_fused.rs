//! The fused selective scan (one burn op, hand-written backward) against `scan_sequential`
//! (burn's autodiff through ~10 small ops per step): outputs and every input gradient of the loss
//! `sum(y ⊙ R)` agree to a relative error ≤ 1e-4 (max |fused − sequential| / max |sequential|,
//! per tensor) over random shapes; the model trains the same with `ScanMode::Fused`.

use burn::tensor::{Device, Tensor, TensorData};
use squish_core::config::SsmMoeConfig;
use squish_core::data::Rng;
use squish_core::model::CpuBackend;
use squish_core::model::scan_op::{scan_fused, try_scan_fused};
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::model::ssm_scan::{ScanInputs, scan_sequential};
use squish_core::model::tensor_to_vec;

const BOUND: f32 = 1e-4;

fn random<const D: usize>(
    rng: &mut Rng,
    shape: [usize; D],
    lo: f32,
    hi: f32,
    device: &Device,
) -> Tensor<D> {
    let len = shape.iter().product();
    let v: Vec<f32> = (0..len).map(|_| lo + (hi - lo) * rng.f32()).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Inputs like the model's: Δ from a softplus, A = −exp(A_log) with A_log ∈ [0, ln 16].
fn inputs(rng: &mut Rng, [b, t, di, n]: [usize; 4], device: &Device) -> ScanInputs {
    let a_log = random(rng, [di, n], 0.0, 16f32.ln(), device);
    let ad = device.is_autodiff();
    let g = |t: Tensor<3>| if ad { t.require_grad() } else { t };
    ScanInputs {
        x: g(random(rng, [b, t, di], -2.0, 2.0, device)),
        delta: g(random(rng, [b, t, di], 0.001, 1.0, device)),
        a: if ad {
            a_log.exp().neg().require_grad()
        } else {
            a_log.exp().neg()
        },
        b: g(random(rng, [b, t, n], -1.5, 1.5, device)),
        c: g(random(rng, [b, t, n], -1.5, 1.5, device)),
        d: if ad {
            random(rng, [di], 0.5, 1.5, device).require_grad()
        } else {
            random(rng, [di], 0.5, 1.5, device)
        },
    }
}

/// max |got − want| / max |want|.
fn rel_err(got: Vec<f32>, want: Vec<f32>) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max);
    diff / scale
}

/// Relative errors of (y, ∂x, ∂Δ, ∂A, ∂B, ∂C, ∂D), fused against sequential.
fn compare(shape: [usize; 4], seed: u64, device: &Device) -> [f32; 7] {
    let mut rng = Rng::new(seed);
    let s = inputs(&mut rng, shape, device);
    let r = random(&mut rng, [shape[0], shape[1], shape[2]], -1.0, 1.0, device);
    let run = |f: &dyn Fn(&ScanInputs) -> Tensor<3>| {
        let y = f(&s);
        let grads = (y.clone() * r.clone()).sum().backward();
        (
            tensor_to_vec(y).unwrap(),
            [
                (tensor_to_vec(s.x.grad(&grads).unwrap()).unwrap()),
                (tensor_to_vec(s.delta.grad(&grads).unwrap()).unwrap()),
                (tensor_to_vec(s.a.grad(&grads).unwrap()).unwrap()),
                (tensor_to_vec(s.b.grad(&grads).unwrap()).unwrap()),
                (tensor_to_vec(s.c.grad(&grads).unwrap()).unwrap()),
                (tensor_to_vec(s.d.grad(&grads).unwrap()).unwrap()),
            ],
        )
    };
    let (y_ref, g_ref) = run(&scan_sequential);
    let (y, g) = run(&|s| try_scan_fused(s).expect("the fused scan covers this backend"));
    let mut out = [rel_err(y, y_ref), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    for (k, (got, want)) in g.into_iter().zip(g_ref).enumerate() {
        out[k + 1] = rel_err(got, want);
    }
    out
}

const NAMES: [&str; 7] = ["y", "dx", "ddelta", "dA", "dB", "dC", "dD"];

#[test]
fn fused_scan_matches_sequential_outputs_and_gradients() {
    let device = CpuBackend::Flex.autodiff_device();
    let mut worst = [0.0f32; 7];
    let mut seed = 100;
    for di in [1, 17, 128] {
        for n in [1, 16] {
            for seq in [1, 7, 128] {
                seed += 1;
                let batch = 1 + (seed as usize % 3);
                let errs = compare([batch, seq, di, n], seed, &device);
                for (k, e) in errs.iter().enumerate() {
                    assert!(
                        *e <= BOUND,
                        "{}: relative error {e} at batch {batch}, seq {seq}, d_inner {di}, N {n}",
                        NAMES[k]
                    );
                    worst[k] = worst[k].max(*e);
                }
            }
        }
    }
    eprintln!("worst relative errors (fused vs sequential), flex:");
    for (name, e) in NAMES.iter().zip(worst) {
        eprintln!("  {name:>7}: {e:.2e}");
    }
}

#[test]
fn fused_scan_matches_sequential_on_ndarray() {
    let device = CpuBackend::Ndarray.autodiff_device();
    let errs = compare([2, 33, 20, 16], 7, &device);
    for (k, e) in errs.iter().enumerate() {
        assert!(*e <= BOUND, "{}: relative error {e} (ndarray)", NAMES[k]);
    }
}

#[test]
fn fused_scan_without_autodiff_equals_the_autodiff_forward() {
    let shape = [2, 9, 17, 16];
    let plain = inputs(&mut Rng::new(3), shape, &CpuBackend::Flex.device());
    let ad = inputs(&mut Rng::new(3), shape, &CpuBackend::Flex.autodiff_device());
    let y_plain = tensor_to_vec(scan_fused(&plain)).unwrap();
    let y_ad = tensor_to_vec(scan_fused(&ad)).unwrap();
    let y_ref = tensor_to_vec(scan_sequential(&plain)).unwrap();
    assert_eq!(y_plain, y_ad);
    assert!(rel_err(y_plain, y_ref) <= BOUND);
}

fn small_cfg() -> SsmMoeConfig {
    SsmMoeConfig {
        d_model: 32,
        n_layers: 2,
        vocab_size: 64,
        seq_len: 64,
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

#[test]
fn model_gradients_with_fused_scan_match_sequential() {
    let c = small_cfg();
    let w = init_weights(&c, 11).unwrap();
    let device = CpuBackend::Flex.autodiff_device();
    let toks: Vec<Vec<u32>> = (0..2)
        .map(|r| {
            (0..64)
                .map(|i| ((i * 13 + r * 7 + 3) % 64) as u32)
                .collect()
        })
        .collect();
    let grads_of = |scan| {
        let m = SsmMoe::from_weights(&c, &w, &device, scan).unwrap();
        let out = m.forward(&toks).unwrap();
        let loss = out.logits.clone().powf_scalar(2.0).mean() + out.balance_loss;
        let g = loss.backward();
        let l0 = &m.layers[0].ssm;
        [
            tensor_to_vec(out.logits).unwrap(),
            tensor_to_vec(l0.a_log.val().grad(&g).unwrap()).unwrap(),
            tensor_to_vec(l0.d.val().grad(&g).unwrap()).unwrap(),
            tensor_to_vec(l0.in_proj.val().grad(&g).unwrap()).unwrap(),
            tensor_to_vec(m.tok_embeddings.val().grad(&g).unwrap()).unwrap(),
        ]
    };
    let want = grads_of(ScanMode::Sequential);
    let got = grads_of(ScanMode::Fused);
    for (k, (g, w)) in got.into_iter().zip(want).enumerate() {
        let e = rel_err(g, w);
        assert!(e <= BOUND, "model tensor {k}: relative error {e}");
    }
}

#[test]
fn fused_scan_matches_sequential_with_gradient_checkpointing() {
    let device = CpuBackend::Flex.autodiff_device().gradient_checkpointing();
    let errs = compare([2, 40, 17, 16], 9, &device);
    for (k, e) in errs.iter().enumerate() {
        assert!(
            *e <= BOUND,
            "{}: relative error {e} (balanced checkpointing)",
            NAMES[k]
        );
    }
}

#[test]
fn scan_setting_fused_parses() {
    let m: ScanMode = serde_json::from_str("\"fused\"").unwrap();
    assert_eq!(m, ScanMode::Fused);
    assert_eq!(
        serde_json::to_string(&ScanMode::Fused).unwrap(),
        "\"fused\""
    );
}
