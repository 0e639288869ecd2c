//! Causal softmax of attention scores as one burn operation ([`causal_softmax`]): replaces
//! `mask_fill(future, −∞)` + `softmax` (burn-flex: a scalar `exp` per element, and the mask as
//! a separate pass) with one vectorized pass forward and one backward
//! ([`super::softmax_kernel`]). Built like the fused scan's node ([`super::scan_op`]); backends
//! it does not cover fall back to burn's masked softmax.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor};
use burn::tensor::{Bool, Tensor, TensorData};

use super::scan_kernel::ScanIsa;
use super::scan_op::{Kept, on_autodiff_backends, primitive_from, tensor_values};
use super::softmax_kernel;

/// Softmax over the last dim of `scores [batch, heads, seq, seq]` where query `i` sees keys
/// `0..=i` only (later keys get exactly 0): `softmax(mask_fill(scores, future, −∞), 3)`. On a
/// backend the fused node does not cover it warns (once) and runs [`masked_softmax`].
///
/// # Panics
/// If the last two dims differ (the scores of a self-attention are square).
pub fn causal_softmax(scores: Tensor<4>) -> Tensor<4> {
    try_causal_softmax(scores.clone()).unwrap_or_else(|| {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!("causal softmax: backend not covered, running the masked softmax");
        });
        masked_softmax(scores)
    })
}

/// [`causal_softmax`] as the fused node, or `None` if the scores' backend is not covered.
///
/// # Panics
/// As [`causal_softmax`].
pub fn try_causal_softmax(scores: Tensor<4>) -> Option<Tensor<4>> {
    let [_, _, t, t2] = scores.dims();
    assert_eq!(
        t, t2,
        "causal softmax: scores must be [batch, heads, seq, seq]"
    );
    if !scores.device().is_autodiff() {
        let (shape, device) = (scores.dims(), scores.device());
        let y = softmax_kernel::causal_softmax(&tensor_values(scores), t, ScanIsa::detect());
        return Some(Tensor::from_data(TensorData::new(y, shape), &device));
    }
    on_autodiff_backends!(autodiff; (&scores))
}

/// The op-by-op form: mask the future with −∞, then burn's softmax.
pub fn masked_softmax(scores: Tensor<4>) -> Tensor<4> {
    let [b, h, t, _] = scores.dims();
    let future = Tensor::<2, Bool>::tril_mask([t, t], 0, &scores.device()); // [seq, seq]
    let masked = scores.mask_fill(
        future.reshape([1, 1, t, t]).expand([b, h, t, t]),
        f32::NEG_INFINITY,
    );
    burn::tensor::activation::softmax(masked, 3)
}

/// The graph step: its state is the output `y` (the inner backend's tensor, shared with the
/// forward's result rather than copied) and its shape.
#[derive(Debug)]
struct CausalSoftmaxBackward;

impl<B: Backend> Backward<B, 1> for CausalSoftmaxBackward
where
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = (B::FloatTensorPrimitive, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node); // [batch, heads, seq, seq]
        let device = dy.device();
        let dy = Kept::<B>::new::<4>(dy);
        let (y, shape) = ops.state;
        let y = Kept::<B>::new::<4>(y);
        let dx = softmax_kernel::causal_softmax_backward(&y, &dy, shape[3], ScanIsa::detect());
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, primitive_from::<B>(dx, &shape, &device));
        }
    }
}

/// The fused softmax on `Autodiff<B, C>`, or `None` if the scores live elsewhere.
fn autodiff<B: Backend, C: CheckpointStrategy>(scores: &Tensor<4>) -> Option<Tensor<4>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B, C>>,
{
    let shape = scores.dims();
    let p = scores.clone().try_into_primitive::<Autodiff<B, C>>().ok()?;
    let (p, node) = p.into_parts();
    let device = p.device();
    let y = softmax_kernel::causal_softmax(&Kept::<B>::new::<4>(p), shape[3], ScanIsa::detect());
    let out = primitive_from::<B>(y, &shape, &device); // [batch, heads, seq, seq]
    let out = match CausalSoftmaxBackward
        .prepare::<C>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((out.clone(), shape), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Some(Tensor::from_primitive::<Autodiff<B, C>>(out))
}
