//! The QAT network: the latent (trainable) model of either family plus the per-tensor plan; its
//! forward maps every planned parameter through its storage grid first — `W_eff = W + sg(Q(W) − W)`
//! (straight-through estimator: the forward sees the quantized weight, the gradient reaches `W`
//! unchanged) — without touching the core model code.
//!
//! `Q` is [`TensorTarget::apply`]: packed INT4/INT8 ([`crate::qat::qat_quantize`], the same
//! function the export uses, so the exported checkpoint *is* the fake-quant model) or F16 rounding.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use half::f16;
use squish_core::checkpoint::Weights;
use squish_core::model::llama::{Llama, layer_tensor_names};
use squish_core::model::ssm_moe::SsmMoe;
use squish_core::model::ssm_moe_weights::{expert_name, router_name, ssm_name};
use squish_core::model::tensor_to_vec;
use squish_core::train::Trainable;
use squish_core::{Error, Result};

use crate::qat::{QatScales, qat_quantize};
use crate::spec::QuantFormat;

/// Storage of one tensor after QAT.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorTarget {
    /// Kept F32 (trained without a grid).
    F32,
    /// Kept, stored F16 (the forward rounds it to F16).
    F16,
    /// Packed INT4/INT8 with the given format.
    Quant(QuantFormat),
}

/// One planned tensor: name, shape, target, and the column importances (calibration `E[x²]`)
/// the weighted clipping search uses, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEntry {
    /// Checkpoint tensor name.
    pub name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Storage after QAT.
    pub target: TensorTarget,
    /// Column importances `[cols]` for [`QatScales::Mse`] (quantized tensors only).
    pub importance: Option<Vec<f32>>,
}

/// The whole plan: every tensor of the model (name order) and how scales are chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct QatPlan {
    /// One entry per tensor.
    pub entries: Vec<PlanEntry>,
    /// Scale choice of the quantized tensors (recomputed from the latent weights each step).
    pub scales: QatScales,
}

impl PlanEntry {
    /// The values the forward (and the export) sees for latent values `w` (row-major `shape`).
    pub fn apply(&self, w: &[f32], scales: &QatScales) -> Result<Vec<f32>> {
        match &self.target {
            TensorTarget::F32 => Ok(w.to_vec()),
            TensorTarget::F16 => Ok(w.iter().map(|&x| f16::from_f32(x).to_f32()).collect()),
            TensorTarget::Quant(fmt) => {
                let [rows, cols] = self.shape[..] else {
                    return Err(Error::tensor(
                        &self.name,
                        "only 2-D tensors can be quantized",
                    ));
                };
                Ok(
                    qat_quantize(w, rows, cols, fmt, scales, self.importance.as_deref())
                        .map_err(|e| Error::tensor(&self.name, e.to_string()))?
                        .dequantize(),
                )
            }
        }
    }
}

/// The latent model of one family.
#[derive(Module, Debug)]
pub struct QatNet {
    /// The latent Llama, when the family is Llama.
    pub llama: Option<Llama>,
    /// The latent SsmMoe, when the family is SsmMoe.
    pub ssm_moe: Option<SsmMoe>,
    /// The per-tensor plan (not a parameter).
    #[module(skip)]
    pub plan: QatPlan,
}

/// A mutable handle on one parameter of a model.
enum ParamMut<'a> {
    One(&'a mut Param<Tensor<1>>),
    Two(&'a mut Param<Tensor<2>>),
}

/// Every parameter of a Llama with its checkpoint name (same names as `Llama::to_weights`).
fn llama_params(m: &mut Llama) -> Vec<(String, ParamMut<'_>)> {
    let mut v = vec![(
        "tok_embeddings.weight".to_string(),
        ParamMut::Two(&mut m.tok_embeddings),
    )];
    for (i, l) in m.layers.iter_mut().enumerate() {
        let [n0, n1, n2, n3, n4, n5, n6, n7, n8] = layer_tensor_names(i);
        v.push((n0, ParamMut::One(&mut l.attention_norm)));
        v.push((n1, ParamMut::Two(&mut l.wq)));
        v.push((n2, ParamMut::Two(&mut l.wk)));
        v.push((n3, ParamMut::Two(&mut l.wv)));
        v.push((n4, ParamMut::Two(&mut l.wo)));
        v.push((n5, ParamMut::One(&mut l.ffn_norm)));
        v.push((n6, ParamMut::Two(&mut l.w1)));
        v.push((n7, ParamMut::Two(&mut l.w2)));
        v.push((n8, ParamMut::Two(&mut l.w3)));
    }
    v.push(("norm.weight".into(), ParamMut::One(&mut m.norm)));
    if let Some(o) = m.output.as_mut() {
        v.push(("output.weight".into(), ParamMut::Two(o)));
    }
    v
}

/// Every parameter of an SsmMoe with its checkpoint name (same names as `SsmMoe::to_weights`).
fn ssm_moe_params(m: &mut SsmMoe) -> Vec<(String, ParamMut<'_>)> {
    let mut v = vec![(
        "tok_embeddings.weight".to_string(),
        ParamMut::Two(&mut m.tok_embeddings),
    )];
    for (i, l) in m.layers.iter_mut().enumerate() {
        let s = &mut l.ssm;
        v.push((
            format!("layers.{i}.ssm_norm.weight"),
            ParamMut::One(&mut l.ssm_norm),
        ));
        v.push((ssm_name(i, "in_proj.weight"), ParamMut::Two(&mut s.in_proj)));
        v.push((
            ssm_name(i, "conv.weight"),
            ParamMut::Two(&mut s.conv_weight),
        ));
        v.push((ssm_name(i, "conv.bias"), ParamMut::One(&mut s.conv_bias)));
        v.push((ssm_name(i, "x_proj.weight"), ParamMut::Two(&mut s.x_proj)));
        v.push((ssm_name(i, "dt_proj.weight"), ParamMut::Two(&mut s.dt_proj)));
        v.push((ssm_name(i, "dt_proj.bias"), ParamMut::One(&mut s.dt_bias)));
        v.push((ssm_name(i, "A_log"), ParamMut::Two(&mut s.a_log)));
        v.push((ssm_name(i, "D"), ParamMut::One(&mut s.d)));
        v.push((
            ssm_name(i, "out_proj.weight"),
            ParamMut::Two(&mut s.out_proj),
        ));
        v.push((
            format!("layers.{i}.moe_norm.weight"),
            ParamMut::One(&mut l.moe_norm),
        ));
        v.push((router_name(i), ParamMut::Two(&mut l.moe.router)));
        for (e, ex) in l.moe.experts.iter_mut().enumerate() {
            v.push((expert_name(i, e, "w1"), ParamMut::Two(&mut ex.w1)));
            v.push((expert_name(i, e, "w2"), ParamMut::Two(&mut ex.w2)));
            v.push((expert_name(i, e, "w3"), ParamMut::Two(&mut ex.w3)));
        }
    }
    v.push(("norm.weight".into(), ParamMut::One(&mut m.norm)));
    v
}

/// Replaces `p` by `p + sg(Q(p) − p)`, keeping the autodiff graph to the latent leaf.
fn straight_through<const D: usize>(
    p: &mut Param<Tensor<D>>,
    entry: &PlanEntry,
    scales: &QatScales,
) -> Result<()> {
    let latent = p.val(); // [shape]
    let shape: [usize; D] = latent.dims();
    let w = tensor_to_vec(latent.clone().detach())?;
    let q = entry.apply(&w, scales)?;
    let delta: Vec<f32> = q.iter().zip(&w).map(|(a, b)| a - b).collect();
    let delta = Tensor::<D>::from_data(TensorData::new(delta, shape), &latent.device()); // [shape], constant
    *p = Param::initialized(p.id, latent + delta);
    Ok(())
}

impl QatNet {
    /// Wraps a latent model; checks that the plan names exactly the model's tensors.
    pub fn new(llama: Option<Llama>, ssm_moe: Option<SsmMoe>, plan: QatPlan) -> Result<Self> {
        if llama.is_some() == ssm_moe.is_some() {
            return Err(Error::invalid("QatNet needs exactly one model"));
        }
        let mut net = QatNet {
            llama,
            ssm_moe,
            plan,
        };
        let names: Vec<String> = net.params_mut().into_iter().map(|(n, _)| n).collect();
        let planned: Vec<&String> = net.plan.entries.iter().map(|e| &e.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        if sorted.iter().collect::<Vec<_>>() != planned {
            return Err(Error::invalid(format!(
                "QAT plan names {} tensors, the model has {} ({} …): model structure not supported",
                planned.len(),
                names.len(),
                names.first().map_or("", String::as_str)
            )));
        }
        Ok(net)
    }

    fn params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        match (&mut self.llama, &mut self.ssm_moe) {
            (Some(m), _) => llama_params(m),
            (_, Some(m)) => ssm_moe_params(m),
            _ => Vec::new(),
        }
    }

    /// The latent weights (F32, checkpoint names).
    pub fn latent_weights(&self) -> Result<Weights> {
        match (&self.llama, &self.ssm_moe) {
            (Some(m), _) => m.to_weights(),
            (_, Some(m)) => m.to_weights(),
            _ => Err(Error::invalid("QatNet without a model")),
        }
    }

    /// A copy whose parameters are the fake-quantized latents (straight-through estimator).
    pub fn fake_quant(&self) -> Result<QatNet> {
        let mut net = self.clone();
        let plan = net.plan.clone();
        for (name, p) in net.params_mut() {
            let i = plan
                .entries
                .binary_search_by(|e| e.name.as_str().cmp(&name))
                .map_err(|_| Error::tensor(&name, "not in the QAT plan"))?;
            let entry = &plan.entries[i];
            if entry.target == TensorTarget::F32 {
                continue;
            }
            match p {
                ParamMut::One(p) => straight_through(p, entry, &plan.scales)?,
                ParamMut::Two(p) => straight_through(p, entry, &plan.scales)?,
            }
        }
        Ok(net)
    }
}

impl Trainable for QatNet {
    /// Logits `[batch, seq, vocab]` of the fake-quantized model (and the SsmMoe balance loss).
    fn train_forward(&self, tokens: &[Vec<u32>]) -> Result<(Tensor<3>, Option<Tensor<1>>)> {
        let fq = self.fake_quant()?;
        match (&fq.llama, &fq.ssm_moe) {
            (Some(m), _) => m.train_forward(tokens),
            (_, Some(m)) => m.train_forward(tokens),
            _ => Err(Error::invalid("QatNet without a model")),
        }
    }
}
