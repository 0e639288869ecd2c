//! The fused training ops against burn's op-by-op forms, on both CPU backends with autodiff and
//! without: the token loss (cross-entropy, with and without the distillation term), SiLU,
//! SoftPlus and the causal attention softmax — same values and same input gradients within
//! 1e-5 (max |fused − reference| / max(1, max |reference|)).

use burn::tensor::activation::{silu as burn_silu, softplus as burn_softplus};
use burn::tensor::{Device, Distribution, Tensor};
use squish_core::model::CpuBackend;
use squish_core::model::act_op::{silu, softplus};
use squish_core::model::softmax_op::{causal_softmax, masked_softmax};
use squish_core::model::tensor_to_vec;
use squish_core::train::{Distill, cross_entropy, distill_kl, token_loss};

const BOUND: f32 = 1e-5;

/// An activation on rank-3 tensors.
type Act3 = fn(Tensor<3>) -> Tensor<3>;

fn devices() -> Vec<Device> {
    [CpuBackend::Flex, CpuBackend::Ndarray]
        .into_iter()
        .flat_map(|b| [b.autodiff_device(), b.device()])
        .collect()
}

fn assert_close(what: &str, got: Vec<f32>, want: Vec<f32>) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
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

/// Value of `f(x)` and, on an autodiff device, `∂ Σ(f(x) ⊙ r) / ∂x` for a fixed random `r`.
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
    let g = leaf.grad(&grads).map(|g| tensor_to_vec(g).unwrap());
    (value, g)
}

#[test]
fn activations_equal_burns() {
    for device in devices() {
        let x = Tensor::<3>::random([3, 17, 40], Distribution::Uniform(-30.0, 30.0), &device);
        let r = Tensor::<3>::random([3, 17, 40], Distribution::Normal(0.0, 1.0), &device);
        let pairs: [(&str, Act3, Act3); 2] = [
            ("silu", silu, burn_silu),
            ("softplus", softplus, |t| burn_softplus(t, 1.0)),
        ];
        for (name, fused, reference) in pairs {
            let (fv, fg) = value_and_grad(&x, &r, fused);
            let (rv, rg) = value_and_grad(&x, &r, reference);
            assert_close(&format!("{name} value on {device:?}"), fv, rv);
            assert_eq!(fg.is_some(), rg.is_some());
            if let (Some(fg), Some(rg)) = (fg, rg) {
                assert_close(&format!("{name} gradient on {device:?}"), fg, rg);
            }
        }
    }
}

#[test]
fn causal_softmax_equals_masked_softmax() {
    for device in devices() {
        for t in [1, 7, 33] {
            let x = Tensor::<4>::random([2, 3, t, t], Distribution::Uniform(-8.0, 8.0), &device);
            let r = Tensor::<4>::random([2, 3, t, t], Distribution::Normal(0.0, 1.0), &device);
            let (fv, fg) = value_and_grad(&x, &r, causal_softmax);
            let (rv, rg) = value_and_grad(&x, &r, masked_softmax);
            assert_close(&format!("softmax value t={t} on {device:?}"), fv, rv);
            if let (Some(fg), Some(rg)) = (fg, rg) {
                assert_close(&format!("softmax gradient t={t} on {device:?}"), fg, rg);
            }
        }
    }
}

#[test]
fn token_loss_equals_cross_entropy_and_distillation() {
    for device in devices() {
        let (b, t, v) = (3, 11, 37);
        let logits = Tensor::<3>::random([b, t, v], Distribution::Normal(0.0, 3.0), &device);
        let teacher = Tensor::<3>::random([b, t, v], Distribution::Normal(0.0, 3.0), &device);
        let targets: Vec<Vec<u32>> = (0..b)
            .map(|r| (0..t).map(|i| ((i * 7 + r * 5) % v) as u32).collect())
            .collect();
        let mix = Distill {
            alpha: 0.6,
            tau: 2.0,
        };
        for with_teacher in [false, true] {
            let run = |fused: bool| {
                let leaf = leaf(&logits);
                let loss = match (fused, with_teacher) {
                    (true, false) => token_loss(leaf.clone(), &targets, None).unwrap(),
                    (true, true) => {
                        token_loss(leaf.clone(), &targets, Some((teacher.clone(), mix))).unwrap()
                    }
                    (false, false) => cross_entropy(leaf.clone(), &targets),
                    (false, true) => {
                        cross_entropy(leaf.clone(), &targets) * (1.0 - mix.alpha)
                            + distill_kl(leaf.clone(), teacher.clone(), mix.tau) * mix.alpha
                    }
                };
                let value = tensor_to_vec(loss.clone().detach()).unwrap();
                let grad = device.is_autodiff().then(|| {
                    let grads = (loss * 0.5).backward();
                    tensor_to_vec(leaf.grad(&grads).expect("logits gradient")).unwrap()
                });
                (value, grad)
            };
            let ((fv, fg), (rv, rg)) = (run(true), run(false));
            let what = format!("teacher {with_teacher} on {device:?}");
            assert_close(&format!("loss, {what}"), fv, rv);
            if let (Some(fg), Some(rg)) = (fg, rg) {
                assert_close(&format!("gradient, {what}"), fg, rg);
            }
        }
    }
}

#[test]
fn token_loss_rejects_bad_targets() {
    let device = CpuBackend::Flex.autodiff_device();
    let logits = Tensor::<3>::zeros([2, 3, 5], &device);
    let out_of_vocab = vec![vec![0, 1, 5], vec![0, 0, 0]];
    assert!(token_loss(logits.clone(), &out_of_vocab, None).is_err());
    let ragged = vec![vec![0, 1], vec![0, 0, 0]];
    assert!(token_loss(logits.clone(), &ragged, None).is_err());
    let teacher = Tensor::<3>::zeros([2, 3, 4], &device);
    let mix = Distill {
        alpha: 0.5,
        tau: 1.0,
    };
    assert!(token_loss(logits, &[vec![0; 3], vec![0; 3]], Some((teacher, mix))).is_err());
}
