//! The selective scan as one burn operation with a hand-written backward ([`scan_fused`]).
//!
//! burn 0.22 dispatches on the device, so a `Tensor<D>` carries no backend type. With burn's
//! `extension` feature, `Tensor::try_into_primitive::<Autodiff<B, C>>()` downcasts a tensor to the
//! autodiff backend's primitive (an `AutodiffTensor<B>`: the inner backend's tensor plus its graph
//! node). The op takes the six inputs' node guards, runs the forward kernel
//! ([`super::scan_kernel`]) on their values and registers one graph step through burn-autodiff's
//! `Backward::prepare(..).compute_bound().stateful()`, keeping copies of the inputs as state. In
//! the backward pass that step receives `∂L/∂y` as the inner backend's primitive, runs the
//! backward kernel and registers the gradient of every parent that requires one. burn stays the
//! autodiff framework; only this node is custom.
//!
//! Covered backends: flex and ndarray, with either gradient-checkpointing strategy. Without
//! autodiff (evaluation) only the forward kernel runs. Any other backend falls back to
//! [`scan_sequential`].

use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor};
use burn::tensor::{Tensor, TensorData};

use super::scan_kernel::{
    ScanBufs, ScanDims, ScanIsa, default_threads, scan_backward, scan_forward,
};
use super::ssm_scan::{ScanInputs, scan_sequential};

/// `$f::<B, C, …>(args)` on each autodiff backend the custom nodes cover — flex and ndarray, each
/// with either gradient-checkpointing strategy — in turn: the first `Some`, else `None`. The one
/// list of covered backends for every custom node (scan, activations, softmax, loss).
macro_rules! on_autodiff_backends {
    ($f:ident $(, $g:tt)* ; ($($arg:expr),*)) => {{
        use ::burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
        #[allow(deprecated)] // NdArray: deprecated upstream in burn 0.22, kept selectable (see README)
        let r = $f::<::burn::backend::Flex, NoCheckpointing $(, $g)*>($($arg),*)
            .or_else(|| $f::<::burn::backend::Flex, BalancedCheckpointing $(, $g)*>($($arg),*))
            .or_else(|| $f::<::burn::backend::NdArray, NoCheckpointing $(, $g)*>($($arg),*))
            .or_else(|| $f::<::burn::backend::NdArray, BalancedCheckpointing $(, $g)*>($($arg),*));
        r
    }};
}
pub(crate) use on_autodiff_backends;

/// The fused scan: same result as [`scan_sequential`] up to float rounding, one graph node.
/// Returns `y [batch, seq, d_inner]`. On a backend it does not cover it warns (once) and runs
/// [`scan_sequential`].
pub fn scan_fused(s: &ScanInputs) -> Tensor<3> {
    try_scan_fused(s).unwrap_or_else(|| {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!("fused scan: backend not covered, running the sequential scan");
        });
        scan_sequential(s)
    })
}

/// [`scan_fused`], or `None` if the inputs' backend is not covered (see the module docs).
pub fn try_scan_fused(s: &ScanInputs) -> Option<Tensor<3>> {
    if !s.x.device().is_autodiff() {
        return Some(forward_only(s));
    }
    on_autodiff_backends!(autodiff; (s))
}

/// The values of a scan's inputs, kept from the forward for the backward.
#[derive(Clone)]
struct Saved {
    dims: ScanDims,
    x: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved").field("dims", &self.dims).finish()
    }
}

impl Saved {
    fn bufs(&self) -> ScanBufs<'_> {
        ScanBufs {
            x: &self.x,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: &self.d,
        }
    }
}

fn dims_of(s: &ScanInputs) -> ScanDims {
    let [batch, seq, d_inner] = s.x.dims();
    ScanDims {
        batch,
        seq,
        d_inner,
        n: s.a.dims()[1],
    }
}

/// The values of `t` (reusing the read buffer where burn allows it).
pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .expect("reading a CPU tensor")
}

/// A value of an inner backend `B` as an f32 vector.
pub(crate) fn primitive_values<B: Backend, const D: usize>(p: B::FloatTensorPrimitive) -> Vec<f32>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    values(Tensor::<D>::from_primitive::<B>(p))
}

/// An inner-backend primitive of `shape` from `v`, on `device`.
pub(crate) fn primitive_from<B: Backend>(
    v: Vec<f32>,
    shape: &[usize],
    device: &B::Device,
) -> B::FloatTensorPrimitive {
    B::float_from_data(TensorData::new(v, shape.to_vec()), device)
}

/// Without autodiff: the forward kernel on the values, one new tensor.
fn forward_only(s: &ScanInputs) -> Tensor<3> {
    let dims = dims_of(s);
    let saved = Saved {
        dims,
        x: values(s.x.clone()),
        delta: values(s.delta.clone()),
        a: values(s.a.clone()),
        b: values(s.b.clone()),
        c: values(s.c.clone()),
        d: values(s.d.clone()),
    };
    let y = scan_forward(
        dims,
        &saved.bufs(),
        default_threads(dims.batch),
        ScanIsa::detect(),
    );
    Tensor::from_data(
        TensorData::new(y, [dims.batch, dims.seq, dims.d_inner]),
        &s.x.device(),
    )
}

/// The graph step of the fused scan; its state is the forward's input values.
#[derive(Debug)]
struct FusedScanBackward;

impl<B: Backend> Backward<B, 6> for FusedScanBackward
where
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 6>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let ScanDims {
            batch,
            seq,
            d_inner,
            n,
        } = saved.dims;
        let dy = grads.consume::<B>(&ops.node); // [batch, seq, d_inner]
        let device = dy.device();
        let dy = primitive_values::<B, 3>(dy);
        let g = scan_backward(
            saved.dims,
            &saved.bufs(),
            &dy,
            default_threads(batch),
            ScanIsa::detect(),
        );
        let outs: [(Vec<f32>, Vec<usize>); 6] = [
            (g.x, vec![batch, seq, d_inner]),
            (g.delta, vec![batch, seq, d_inner]),
            (g.a, vec![d_inner, n]),
            (g.b, vec![batch, seq, n]),
            (g.c, vec![batch, seq, n]),
            (g.d, vec![d_inner]),
        ];
        for (parent, (v, shape)) in ops.parents.into_iter().zip(outs) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, primitive_from::<B>(v, &shape, &device));
            }
        }
    }
}

/// The fused scan on `Autodiff<B, C>`, or `None` if the inputs live elsewhere.
fn autodiff<B: Backend, C: CheckpointStrategy>(s: &ScanInputs) -> Option<Tensor<3>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B, C>>,
{
    let x = s.x.clone().try_into_primitive::<Autodiff<B, C>>().ok()?;
    let delta = s
        .delta
        .clone()
        .try_into_primitive::<Autodiff<B, C>>()
        .ok()?;
    let a = s.a.clone().try_into_primitive::<Autodiff<B, C>>().ok()?;
    let b = s.b.clone().try_into_primitive::<Autodiff<B, C>>().ok()?;
    let c = s.c.clone().try_into_primitive::<Autodiff<B, C>>().ok()?;
    let d = s.d.clone().try_into_primitive::<Autodiff<B, C>>().ok()?;
    let dims = dims_of(s);
    let (x, gx) = x.into_parts();
    let (delta, gdelta) = delta.into_parts();
    let (a, ga) = a.into_parts();
    let (b, gb) = b.into_parts();
    let (c, gc) = c.into_parts();
    let (d, gd) = d.into_parts();
    let device = x.device();
    let saved = Saved {
        dims,
        x: primitive_values::<B, 3>(x),
        delta: primitive_values::<B, 3>(delta),
        a: primitive_values::<B, 2>(a),
        b: primitive_values::<B, 3>(b),
        c: primitive_values::<B, 3>(c),
        d: primitive_values::<B, 1>(d),
    };
    let y = scan_forward(
        dims,
        &saved.bufs(),
        default_threads(dims.batch),
        ScanIsa::detect(),
    );
    let y = primitive_from::<B>(y, &[dims.batch, dims.seq, dims.d_inner], &device); // [batch, seq, d_inner]
    let out = match FusedScanBackward
        .prepare::<C>([gx, gdelta, ga, gb, gc, gd])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Arc::new(saved), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Some(Tensor::from_primitive::<Autodiff<B, C>>(out))
}
