//! The token loss as one burn operation ([`token_loss`]): cross-entropy, optionally mixed with the
//! distillation KL, whose forward computes the gradient with respect to the logits too
//! ([`super::loss_kernel`]); the graph step only scales that saved gradient by the upstream one.
//!
//! burn's op-by-op form ([`super::cross_entropy`], [`super::distill_kl`]) makes ~10 passes over
//! the `[batch, seq, vocab]` logits with a scalar `exp` per element forward and backward; at vocab
//! 512 that was the largest single cost of a training step after the matmuls. The custom node is
//! built the same way as the fused scan's ([`crate::model::scan_op`]): downcast to the autodiff
//! backend's primitive, run the kernel, register one stateful step. Other backends (none today)
//! fall back to the op-by-op form.

use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Backend, DispatchKindConversion, DispatchTensor, Flex};
use burn::tensor::{Tensor, TensorData};

use super::loss_kernel::{self, Distill};
use super::{cross_entropy, distill_kl};
use crate::model::scan_kernel::ScanIsa;
use crate::model::scan_op::{Kept, on_autodiff_backends, primitive_from, tensor_values};
use crate::{Error, Result};

/// `(1 − α)·cross_entropy(logits, targets) + α·distill_kl(logits, teacher, τ)` as one graph node
/// (plain cross-entropy without a teacher), a scalar `[1]`. `logits [batch, seq, vocab]`; the
/// teacher's logits, same shape, are treated as constants. Equal to the op-by-op form up to float
/// rounding. Errors on a target outside the vocabulary, targets that are not `[batch, seq]`,
/// mismatched teacher logits, empty logits, or a temperature that is not finite and > 0. On a
/// backend the fused node does not cover it warns (once) and runs the op-by-op form.
pub fn token_loss(
    logits: Tensor<3>,
    targets: &[Vec<u32>],
    teacher: Option<(Tensor<3>, Distill)>,
) -> Result<Tensor<1>> {
    match try_token_loss(logits.clone(), targets, teacher.clone())? {
        Some(loss) => Ok(loss),
        None => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!("token loss: backend not covered, running the op-by-op form");
            });
            Ok(reference(logits, targets, teacher))
        }
    }
}

/// [`token_loss`] as the fused node, `Ok(None)` if the logits' backend is not covered (the
/// inputs are checked either way).
pub fn try_token_loss(
    logits: Tensor<3>,
    targets: &[Vec<u32>],
    teacher: Option<(Tensor<3>, Distill)>,
) -> Result<Option<Tensor<1>>> {
    let [b, t, v] = logits.dims();
    if targets.len() != b || targets.iter().any(|r| r.len() != t) {
        return Err(Error::invalid(format!(
            "token loss: targets are {} rows of {} tokens, logits [{b}, {t}, {v}]",
            targets.len(),
            targets.first().map_or(0, Vec::len)
        )));
    }
    if let Some((tl, _)) = &teacher
        && tl.dims() != [b, t, v]
    {
        return Err(Error::invalid(format!(
            "token loss: teacher logits {:?}, student [{b}, {t}, {v}]",
            tl.dims()
        )));
    }
    let inputs = Inputs {
        vocab: v,
        targets: targets.iter().flatten().copied().collect(),
        teacher: teacher.map(|(tl, mix)| (tensor_values(tl), mix)),
    };
    if !logits.device().is_autodiff() {
        let device = logits.device();
        let out = inputs.run(&tensor_values(logits))?;
        return Ok(Some(scalar(out.loss, &device)));
    }
    on_autodiff_backends!(autodiff; (&logits, &inputs)).transpose()
}

/// The op-by-op form, for backends the fused node does not cover.
fn reference(
    logits: Tensor<3>,
    targets: &[Vec<u32>],
    teacher: Option<(Tensor<3>, Distill)>,
) -> Tensor<1> {
    let ce = cross_entropy(logits.clone(), targets);
    match teacher {
        None => ce,
        Some((tl, mix)) => ce * (1.0 - mix.alpha) + distill_kl(logits, tl, mix.tau) * mix.alpha,
    }
}

/// The non-tensor inputs of the loss.
struct Inputs {
    vocab: usize,
    targets: Vec<u32>,
    teacher: Option<(Kept<Flex>, Distill)>,
}

impl Inputs {
    fn run(&self, logits: &[f32]) -> Result<loss_kernel::LossGrad> {
        let teacher = self.teacher.as_ref().map(|(t, m)| (&t[..], *m));
        loss_kernel::token_loss(
            logits,
            self.vocab,
            &self.targets,
            teacher,
            ScanIsa::detect(),
        )
    }
}

/// A `[1]` tensor holding `v`.
fn scalar(v: f64, device: &burn::tensor::Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![v as f32], [1]), device)
}

/// The graph step: its state is `∂loss/∂logits` and the logits' shape.
#[derive(Debug)]
struct TokenLossBackward;

impl<B: Backend> Backward<B, 1> for TokenLossBackward
where
    DispatchTensor: DispatchKindConversion<B>,
{
    type State = Arc<(Vec<f32>, [usize; 3])>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let up = grads.consume::<B>(&ops.node); // [1]
        let device = up.device();
        let up = Kept::<B>::new::<1>(up)[0];
        let (mut g, shape) = Arc::try_unwrap(ops.state).unwrap_or_else(|s| (*s).clone());
        for x in &mut g {
            *x *= up;
        }
        if let [Some(node)] = ops.parents {
            grads.register::<B>(node.id, primitive_from::<B>(g, &shape, &device));
        }
    }
}

/// The fused loss on `Autodiff<B, C>`, or `None` if the logits live elsewhere.
fn autodiff<B: Backend, C: CheckpointStrategy>(
    logits: &Tensor<3>,
    inputs: &Inputs,
) -> Option<Result<Tensor<1>>>
where
    DispatchTensor: DispatchKindConversion<B> + DispatchKindConversion<Autodiff<B, C>>,
{
    let shape = logits.dims();
    let z = logits.clone().try_into_primitive::<Autodiff<B, C>>().ok()?;
    let (z, node) = z.into_parts();
    let device = z.device();
    let out = match inputs.run(&Kept::<B>::new::<3>(z)) {
        Ok(out) => out,
        Err(e) => return Some(Err(e)),
    };
    let loss = primitive_from::<B>(vec![out.loss as f32], &[1], &device); // [1]
    let t = match TokenLossBackward
        .prepare::<C>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Arc::new((out.grad, shape)), loss),
        OpsKind::UnTracked(prep) => prep.finish(loss),
    };
    Some(Ok(Tensor::from_primitive::<Autodiff<B, C>>(t)))
}
