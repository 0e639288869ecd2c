//! The fused training ops against burn's op-by-op forms, on both CPU backends with autodiff and
//! without: the token loss (cross-entropy, with and without the distillation term), SiLU,
//! SoftPlus and the causal attention softmax — same values and same input gradients within
//! 1e-5 (max |fused − reference| / max(1e-3, max |reference|)). The fused side is called through
//! the `try_*` entry points, so a backend the node does not cover fails the test instead of
//! silently comparing burn with itself.

use burn::tensor::activation::{silu as burn_silu, softplus as burn_softplus};
use burn::tensor::{Device, Tensor, TensorData};
use squish_core::data::Rng;
use squish_core::model::CpuBackend;
use squish_core::model::act_kernel::Act;
use squish_core::model::act_op::try_act;
use squish_core::model::softmax_op::{masked_softmax, try_causal_softmax};
use squish_core::model::tensor_to_vec;
use squish_core::train::{Distill, cross_entropy, distill_kl, token_loss, try_token_loss};

const BOUND: f32 = 1e-5;

fn devices() -> Vec<Device> {
    [CpuBackend::Flex, CpuBackend::Ndarray]
        .into_iter()
        .flat_map(|b| [b.autodiff_device(), b.device()])
        .collect()
}

/// A seeded tensor of values in `[-spread/2, spread/2)`.
fn data<const D: usize>(shape: [usize; D], seed: u32, spread: f32, device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed as u64);
    let v: Vec<f32> = (0..n).map(|_| (rng.f32() - 0.5) * spread).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    assert!(!want.is_empty(), "{what}: nothing to compare");
    assert!(
        got.iter().chain(want).all(|v| v.is_finite()),
        "{what}: non-finite values"
    );
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(
        err / scale <= BOUND,
        "{what}: max error {err} (scale {scale})"
    );
}

/// `x` as a fresh leaf, tracked on an autodiff device.
fn leaf<const D: usize>(x: &Tensor<D>) -> Tensor<D> {
    let x = x.clone().detach();
    if x.device().is_autodiff() {
        x.require_grad()
    } else {
        x
    }
}

/// Value of `f(x)` and, on an autodiff device, `∂ Σ(f(x) ⊙ r) / ∂x` (which must exist).
fn value_and_grad<const D: usize>(
    x: &Tensor<D>,
    r: &Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<D>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let leaf = leaf(x);
    let y = f(leaf.clone());
    let value = tensor_to_vec(y.clone().detach()).unwrap();
    if !x.device().is_autodiff() {
        return (value, None);
    }
    let grads = (y * r.clone()).sum().backward();
    let g = leaf.grad(&grads).expect("the input has a gradient");
    (value, Some(tensor_to_vec(g).unwrap()))
}

/// Compares values and (on autodiff devices) gradients.
fn compare(what: &str, fused: (Vec<f32>, Option<Vec<f32>>), want: (Vec<f32>, Option<Vec<f32>>)) {
    assert_close(&format!("{what}: value"), &fused.0, &want.0);
    assert_eq!(
        fused.1.is_some(),
        want.1.is_some(),
        "{what}: gradient presence"
    );
    if let (Some(f), Some(w)) = (fused.1, want.1) {
        assert_close(&format!("{what}: gradient"), &f, &w);
    }
}

#[test]
fn activations_equal_burns() {
    for device in devices() {
        let x = data([3, 17, 40], 1, 60.0, &device);
        let r = data([3, 17, 40], 2, 2.0, &device);
        for act in [Act::Silu, Act::Softplus] {
            let fused = value_and_grad(&x, &r, |t| try_act(act, t).expect("covered backend"));
            let want = value_and_grad(&x, &r, |t| match act {
                Act::Silu => burn_silu(t),
                Act::Softplus => burn_softplus(t, 1.0),
            });
            compare(&format!("{act:?} on {device:?}"), fused, want);
        }
    }
}

#[test]
fn causal_softmax_equals_masked_softmax() {
    for device in devices() {
        for t in [1, 7, 33] {
            let x = data([2, 3, t, t], t as u32, 16.0, &device);
            let r = data([2, 3, t, t], 50 + t as u32, 2.0, &device);
            let fused = value_and_grad(&x, &r, |s| try_causal_softmax(s).expect("covered"));
            let want = value_and_grad(&x, &r, masked_softmax);
            compare(&format!("softmax t={t} on {device:?}"), fused, want);
        }
    }
}

#[test]
fn token_loss_equals_cross_entropy_and_distillation() {
    for device in devices() {
        let (b, t, v) = (3, 11, 37);
        let logits = data([b, t, v], 3, 12.0, &device);
        let teacher = data([b, t, v], 4, 12.0, &device);
        let targets: Vec<Vec<u32>> = (0..b)
            .map(|r| (0..t).map(|i| ((i * 7 + r * 5) % v) as u32).collect())
            .collect();
        let mixes = [
            None,
            Some(Distill {
                alpha: 0.6,
                tau: 2.0,
            }),
            Some(Distill {
                alpha: 1.0,
                tau: 1.0,
            }),
        ];
        for mix in mixes {
            let run = |fused: bool| {
                let leaf = leaf(&logits);
                let loss = match (fused, mix) {
                    (true, m) => {
                        try_token_loss(leaf.clone(), &targets, m.map(|m| (teacher.clone(), m)))
                            .unwrap()
                            .expect("covered backend")
                    }
                    (false, None) => cross_entropy(leaf.clone(), &targets),
                    (false, Some(m)) => {
                        cross_entropy(leaf.clone(), &targets) * (1.0 - m.alpha)
                            + distill_kl(leaf.clone(), teacher.clone(), m.tau) * m.alpha
                    }
                };
                let value = tensor_to_vec(loss.clone().detach()).unwrap();
                let grad = device.is_autodiff().then(|| {
                    let grads = (loss * 0.5).backward();
                    tensor_to_vec(leaf.grad(&grads).expect("logits gradient")).unwrap()
                });
                (value, grad)
            };
            compare(
                &format!("loss {mix:?} on {device:?}"),
                run(true),
                run(false),
            );
        }
    }
}

#[test]
fn token_loss_rejects_bad_inputs() {
    let device = CpuBackend::Flex.autodiff_device();
    let logits = Tensor::<3>::zeros([2, 3, 5], &device);
    let out_of_vocab = vec![vec![0, 1, 5], vec![0, 0, 0]];
    assert!(token_loss(logits.clone(), &out_of_vocab, None).is_err());
    let ragged = vec![vec![0, 1], vec![0, 0, 0, 0]];
    assert!(token_loss(logits.clone(), &ragged, None).is_err());
    let ok = vec![vec![0; 3], vec![0; 3]];
    let mix = Distill {
        alpha: 0.5,
        tau: 1.0,
    };
    let teacher = Tensor::<3>::zeros([2, 3, 4], &device);
    assert!(token_loss(logits.clone(), &ok, Some((teacher, mix))).is_err());
    let hot = Distill {
        alpha: 0.5,
        tau: f32::NAN,
    };
    assert!(token_loss(logits.clone(), &ok, Some((logits.clone(), hot))).is_err());
    assert!(token_loss(logits, &ok, None).is_ok());
}
