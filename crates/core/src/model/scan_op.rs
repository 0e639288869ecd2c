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

use std::any::Any;
use std::ops::Deref;
use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor, Flex};
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

/// The values of a scan's inputs, kept from the forward for the backward: `Vec<f32>` copies, or
/// [`Kept`] buffers shared with the graph.
struct Saved<V> {
    dims: ScanDims,
    x: V,
    delta: V,
    a: V,
    b: V,
    c: V,
    d: V,
}

impl<V> std::fmt::Debug for Saved<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved").field("dims", &self.dims).finish()
    }
}

impl<V: Deref<Target = [f32]>> Saved<V> {
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

/// The values of a tensor without autodiff: burn-flex's buffer read in place when it is a
/// contiguous f32 tensor, else copied out ([`values`]).
pub(crate) fn tensor_values<const D: usize>(t: Tensor<D>) -> Kept<Flex> {
    match t.clone().try_into_primitive::<Flex>() {
        Ok(p) => Kept::new::<D>(p),
        Err(_) => Kept::Copied(values(t)),
    }
}

/// A value of an inner backend `B` as an f32 vector.
pub(crate) fn primitive_values<B: Backend, const D: usize>(p: B::FloatTensorPrimitive) -> Vec<f32>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    values(Tensor::<D>::from_primitive::<B>(p))
}

/// The f32 buffer of `p` when it is a contiguous f32 burn-flex tensor (borrowed, no copy).
fn flex_f32<P: 'static>(p: &P) -> Option<&[f32]> {
    (p as &dyn Any)
        .downcast_ref::<burn_flex::FlexTensor>()
        .and_then(|t| t.as_slice::<f32>())
}

/// An inner-backend tensor's values, as the custom nodes read their inputs, upstream gradients
/// and saved state: burn-flex's buffer shared with the graph (no copy), or a copy on other
/// backends. Copying them cost ~10 % of a stories260K QAT step.
pub(crate) enum Kept<B: Backend> {
    /// A contiguous f32 burn-flex tensor, read in place.
    Shared(B::FloatTensorPrimitive),
    /// The values copied out.
    Copied(Vec<f32>),
}

impl<B: Backend> Kept<B>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    /// Keep `p`'s values (a rank-`D` tensor).
    pub(crate) fn new<const D: usize>(p: B::FloatTensorPrimitive) -> Self {
        if flex_f32(&p).is_some() {
            Kept::Shared(p)
        } else {
            Kept::Copied(primitive_values::<B, D>(p))
        }
    }
}

impl<B: Backend> Deref for Kept<B> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            Kept::Shared(p) => flex_f32(p).expect("a kept flex tensor stays contiguous f32"),
            Kept::Copied(v) => v,
        }
    }
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
        x: tensor_values(s.x.clone()),
        delta: tensor_values(s.delta.clone()),
        a: tensor_values(s.a.clone()),
        b: tensor_values(s.b.clone()),
        c: tensor_values(s.c.clone()),
        d: tensor_values(s.d.clone()),
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
    type State = Arc<Saved<Kept<B>>>;

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
        let dy = Kept::<B>::new::<3>(dy);
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
        x: Kept::new::<3>(x),
        delta: Kept::new::<3>(delta),
        a: Kept::new::<2>(a),
        b: Kept::new::<3>(b),
        c: Kept::new::<3>(c),
        d: Kept::new::<1>(d),
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
