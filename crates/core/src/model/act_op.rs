//! SiLU and SoftPlus as single burn operations ([`silu`], [`softplus`]): the forward computes the
//! value and the derivative in one vectorized pass ([`super::act_kernel`]); the graph step
//! multiplies the upstream gradient by the saved derivative.
//!
//! burn-flex evaluates `sigmoid` with a scalar `exp` per element, and burn builds SiLU as
//! `x · sigmoid(x)` (two graph nodes) and SoftPlus from seven ops; in an SsmMoe training step
//! these were the largest cost after the matmuls. The node is built like the fused scan's
//! ([`super::scan_op`]); backends it does not cover fall back to burn's activations.

use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor};
use burn::tensor::{Tensor, TensorData};

use super::act_kernel::{Act, act_forward};
use super::scan_kernel::ScanIsa;
use super::scan_op::{Kept, on_autodiff_backends, primitive_from, tensor_values};

/// `x·σ(x)`, elementwise; equal to burn's `activation::silu` up to float rounding.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    apply(Act::Silu, x)
}

/// `ln(1 + eˣ)`, elementwise; equal to burn's `activation::softplus(x, 1.0)` up to float
/// rounding (burn returns `x` itself above 20, where `ln(1 + eˣ)` rounds to `x` in f32 too).
pub fn softplus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    apply(Act::Softplus, x)
}

/// `act` as the fused node; on a backend the node does not cover it warns (once) and runs
/// burn's activation.
fn apply<const D: usize>(act: Act, x: Tensor<D>) -> Tensor<D> {
    try_act(act, x.clone()).unwrap_or_else(|| {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!("fused activations: backend not covered, running burn's");
        });
        match act {
            Act::Silu => burn::tensor::activation::silu(x),
            Act::Softplus => burn::tensor::activation::softplus(x, 1.0),
        }
    })
}

/// `act` as the fused node, or `None` if `x`'s backend is not covered.
pub fn try_act<const D: usize>(act: Act, x: Tensor<D>) -> Option<Tensor<D>> {
    if !x.device().is_autodiff() {
        let (shape, device) = (x.dims(), x.device());
        let (y, _) = act_forward(act, &tensor_values(x), ScanIsa::detect());
        return Some(Tensor::from_data(TensorData::new(y, shape), &device));
    }
    on_autodiff_backends!(autodiff, D; (act, &x))
}

/// The graph step of a rank-`D` activation: its state is `∂y/∂x` and the shape.
#[derive(Debug)]
struct ActBackward<const D: usize>;

impl<B: Backend, const D: usize> Backward<B, 1> for ActBackward<D>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = Arc<(Vec<f32>, Vec<usize>)>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let device = dy.device();
        let dy = Kept::<B>::new::<D>(dy);
        let (d, shape) = &*ops.state;
        let g: Vec<f32> = dy.iter().zip(d).map(|(g, d)| g * d).collect();
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, primitive_from::<B>(g, shape, &device));
        }
    }
}

/// The fused activation on `Autodiff<B, C>`, or `None` if `x` lives elsewhere.
fn autodiff<B: Backend, C: CheckpointStrategy, const D: usize>(
    act: Act,
    x: &Tensor<D>,
) -> Option<Tensor<D>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B, C>>,
{
    let shape = x.dims().to_vec();
    let p = x.clone().try_into_primitive::<Autodiff<B, C>>().ok()?;
    let (p, node) = p.into_parts();
    let device = p.device();
    let (y, d) = act_forward(act, &Kept::<B>::new::<D>(p), ScanIsa::detect());
    let y = primitive_from::<B>(y, &shape, &device);
    let out = match ActBackward::<D>
        .prepare::<C>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Arc::new((d, shape)), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<Autodiff<B, C>>(out))
}
