//! The QAT network: the latent (trainable) model of either family plus the per-tensor plan; its
//! forward maps every planned parameter through its storage grid first — `W_eff = W + sg(Q(W) − W)`
//! (straight-through estimator: the forward sees the quantized weight, the gradient reaches `W`
//! unchanged) — without touching the core model code.
//!
//! `Q` is [`TensorTarget::apply`]: packed INT4/INT8 ([`crate::qat::qat_quantize`], the same
//! function the export uses, so the exported checkpoint *is* the fake-quant model) or F16 rounding;
//! learned scales (LSQ) and codebook tensors map through burn ops instead, so their scales and
//! levels train too ([`crate::qat_codebook`]).

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{Tensor, TensorData};
use squish_core::checkpoint::Weights;
use squish_core::codebook::CbTensor;
use squish_core::model::llama::{Llama, layer_tensor_names};
use squish_core::model::ssm_moe::SsmMoe;
use squish_core::model::ssm_moe_weights::{expert_name, router_name, ssm_name};
use squish_core::model::tensor_to_vec;
use squish_core::train::Trainable;
use squish_core::{Error, Result};

use crate::grid::GroupParams;
use crate::qat::{QatScales, learned_column_scales, learned_scale};
use crate::qat_codebook::{codebook_straight_through, export_codebook, initial_codebook};
use crate::qat_flips::CodeFlips;
pub use crate::qat_plan::{PlanEntry, QatPlan, TensorTarget};
use crate::qat_share::SharedDeltas;
use crate::spec::QuantFormat;

/// The latent model of one family.
#[derive(Module, Debug)]
pub struct QatNet {
    /// The latent Llama, when the family is Llama.
    pub llama: Option<Llama>,
    /// The latent SsmMoe, when the family is SsmMoe.
    pub ssm_moe: Option<SsmMoe>,
    /// Learned scales: `ln(scale)` `[rows, n_groups]` of every codebook tensor, and of every
    /// quantized tensor under [`QatScales::Learned`], in plan order.
    pub log_scales: Vec<Param<Tensor<2>>>,
    /// Trained levels `[2^bits]` of every codebook tensor, in plan order.
    pub levels: Vec<Param<Tensor<1>>>,
    /// The per-tensor plan (not a parameter).
    #[module(skip)]
    pub plan: QatPlan,
    /// Per plan entry, its index in `log_scales` (learned scales only).
    #[module(skip)]
    slots: Vec<Option<usize>>,
    /// Per plan entry, its index in `levels` (codebook tensors only).
    #[module(skip)]
    level_slots: Vec<Option<usize>>,
    /// The current step's fake-quant deltas, shared by this network's clones (the micro-batch
    /// replicas of one step).
    #[module(skip)]
    shared: Arc<SharedDeltas>,
    /// Code changes of the codebook tensors between steps, shared by this network's clones.
    #[module(skip)]
    pub flips: Arc<CodeFlips>,
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

/// Replaces `p` by `p + sg(Q(p) − p)` given the constant `delta = Q(p) − p`, keeping the
/// autodiff graph to the latent leaf.
fn straight_through<const D: usize>(p: &mut Param<Tensor<D>>, delta: Vec<f32>) -> Result<()> {
    let latent = p.val(); // [shape]
    let shape: [usize; D] = latent.dims();
    if delta.len() != shape.iter().product::<usize>() {
        return Err(Error::invalid(format!(
            "fake-quant delta of {} values for a tensor of shape {shape:?}",
            delta.len()
        )));
    }
    let delta = Tensor::<D>::from_data(TensorData::new(delta, shape), &latent.device()); // [shape], constant
    *p = Param::initialized(p.id, latent + delta);
    Ok(())
}

/// Replaces `p` by its fake-quantized value on the learned grid `exp(log_s)` (LSQ): the codes
/// `clamp(round(w / s))` pass the gradient straight through to `w` inside the range, and the
/// scale gets `round(x) − x` inside and the clamp level outside, as in Esser et al. 2020.
fn learned_straight_through(
    p: &mut Param<Tensor<2>>,
    log_s: &Tensor<2>,
    fmt: &QuantFormat,
) -> Result<()> {
    let w = p.val(); // [rows, cols]
    let [rows, cols] = w.dims();
    let group = fmt.group_for(cols)?;
    let s = learned_column_scales(log_s, rows, cols, group)?; // [rows, cols], F16 values
    let x = w / s.clone(); // [rows, cols]
    let rounded = x.clone() + (x.clone().round() - x).detach();
    let (lo, hi) = fmt.level_range();
    *p = Param::initialized(p.id, rounded.clamp(lo as f32, hi as f32) * s);
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
            log_scales: Vec::new(),
            levels: Vec::new(),
            plan,
            slots: Vec::new(),
            level_slots: Vec::new(),
            shared: Arc::default(),
            flips: Arc::default(),
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
        let learned = matches!(net.plan.scales, QatScales::Learned(_));
        let trains_grid = |t: &TensorTarget| match t {
            TensorTarget::Quant(_) => learned,
            TensorTarget::Codebook { .. } => true,
            _ => false,
        };
        if net.plan.entries.iter().any(|e| trains_grid(&e.target)) {
            let latent = net.latent_weights()?;
            let device = match net.params_mut().into_iter().next() {
                Some((_, ParamMut::Two(p))) => p.val().device(),
                Some((_, ParamMut::One(p))) => p.val().device(),
                None => return Err(Error::invalid("QAT model without parameters")),
            };
            let n = net.plan.entries.len();
            let (mut slots, mut level_slots) = (vec![None; n], vec![None; n]);
            for (i, e) in net.plan.entries.iter().enumerate() {
                if !trains_grid(&e.target) {
                    continue;
                }
                let w = latent.get(&e.name)?.to_f32(); // [rows, cols]
                let (rows, cols) = (e.shape[0], e.shape[1]);
                // The starting scales: the clipping search of the initial latents (uniform
                // grid) or the post-training codebook fit (codebook, with its levels).
                let log_s: Vec<f32> = match &e.target {
                    TensorTarget::Codebook {
                        bits,
                        group,
                        scales,
                    } => {
                        let (log_s, levels) = initial_codebook(
                            &w,
                            rows,
                            cols,
                            *bits,
                            *group,
                            *scales,
                            e.importance.as_deref(),
                        )
                        .map_err(|err| Error::tensor(&e.name, err.to_string()))?;
                        let len = levels.len();
                        let t = Tensor::<1>::from_data(TensorData::new(levels, [len]), &device);
                        level_slots[i] = Some(net.levels.len());
                        net.levels.push(Param::from_tensor(t));
                        log_s
                    }
                    _ => {
                        let q = e.apply_packed(&w, &net.plan.scales)?;
                        q.scales.iter().map(|s| s.to_f32().ln()).collect()
                    }
                }; // [rows, n_groups]
                let shape = [rows, log_s.len() / rows];
                let t = Tensor::<2>::from_data(TensorData::new(log_s, shape), &device);
                slots[i] = Some(net.log_scales.len());
                net.log_scales.push(Param::from_tensor(t));
            }
            net.slots = slots;
            net.level_slots = level_slots;
        }
        Ok(net)
    }

    /// The packed codebook of plan entry `entry` for latent values `w` — exactly its forward's
    /// fake-quant values ([`export_codebook`]); `None` unless the entry is a codebook tensor.
    pub fn codebook_tensor(&self, entry: usize, w: &[f32]) -> Result<Option<CbTensor>> {
        let (Some(e), Some(Some(slot)), Some(Some(lslot))) = (
            self.plan.entries.get(entry),
            self.slots.get(entry),
            self.level_slots.get(entry),
        ) else {
            return Ok(None);
        };
        let TensorTarget::Codebook { group, scales, .. } = e.target else {
            return Ok(None);
        };
        // The same burn `exp` as the forward, so the F16 scales round alike.
        let s = tensor_to_vec(self.log_scales[*slot].val().detach().exp())?;
        let levels = tensor_to_vec(self.levels[*lslot].val().detach())?;
        export_codebook(w, e.shape[0], e.shape[1], group, scales, &s, &levels)
            .map(Some)
            .map_err(|err| Error::tensor(&e.name, err.to_string()))
    }

    /// The group parameters the learned scales of plan entry `entry` stand for (F16-rounded as
    /// in the forward), `[rows, n_groups]`; `None` unless scales are learned and it is quantized.
    pub fn learned_params(&self, entry: usize) -> Result<Option<Vec<GroupParams>>> {
        let (Some(Some(slot)), Some(TensorTarget::Quant(_))) = (
            self.slots.get(entry),
            self.plan.entries.get(entry).map(|e| &e.target),
        ) else {
            return Ok(None);
        };
        let log_s = tensor_to_vec(self.log_scales[*slot].val().detach())?;
        Ok(Some(
            log_s
                .iter()
                .map(|&l| GroupParams {
                    scale: learned_scale(l.exp()),
                    zero: 0,
                })
                .collect(),
        ))
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

    /// A copy whose parameters are the fake-quantized latents (straight-through estimator). The
    /// deltas `Q(w) − w` of grid-mapped tensors are computed once per set of latent values and
    /// shared by this network's clones ([`SharedDeltas`]).
    pub fn fake_quant(&self) -> Result<QatNet> {
        Ok(self.fake_quant_dampened()?.0)
    }

    /// [`QatNet::fake_quant`], and the summed oscillation dampening of its codebook tensors
    /// (`None` unless `plan.dampen > 0`). Reports every codebook tensor's codes to
    /// [`QatNet::flips`].
    pub fn fake_quant_dampened(&self) -> Result<(QatNet, Option<Tensor<1>>)> {
        let mut net = self.clone();
        let mut dampening: Option<Tensor<1>> = None;
        let plan = net.plan.clone();
        let slots = net.slots.clone();
        let level_slots = net.level_slots.clone();
        let shared = Arc::clone(&net.shared);
        let flips = Arc::clone(&net.flips);
        // The dampening is a mean over every codebook weight of the network.
        let coded_weights: usize = plan
            .entries
            .iter()
            .filter(|e| matches!(e.target, TensorTarget::Codebook { .. }))
            .map(|e| e.shape.iter().product::<usize>())
            .sum::<usize>()
            .max(1);
        let log_scales: Vec<Tensor<2>> = net.log_scales.iter().map(|p| p.val()).collect();
        let levels: Vec<Tensor<1>> = net.levels.iter().map(|p| p.val()).collect();
        let mut params = net.params_mut();
        // Learned scales map through burn ops here; the other grid-mapped tensors become jobs.
        let mut jobs: Vec<(usize, usize)> = Vec::new(); // (param index, plan entry)
        for (k, (name, p)) in params.iter_mut().enumerate() {
            let i = plan
                .entries
                .binary_search_by(|e| e.name.as_str().cmp(name.as_str()))
                .map_err(|_| Error::tensor(name.as_str(), "not in the QAT plan"))?;
            let entry = &plan.entries[i];
            if entry.target == TensorTarget::F32 {
                continue;
            }
            if let (Some(slot), Some(lslot), TensorTarget::Codebook { group, scales, .. }) = (
                slots.get(i).copied().flatten(),
                level_slots.get(i).copied().flatten(),
                &entry.target,
            ) {
                let ParamMut::Two(p) = p else {
                    return Err(Error::tensor(
                        name.as_str(),
                        "only 2-D tensors can be quantized",
                    ));
                };
                let out = codebook_straight_through(
                    p,
                    &log_scales[slot],
                    &levels[lslot],
                    *group,
                    *scales,
                    plan.dampen / coded_weights as f32,
                )
                .map_err(|e| Error::tensor(name.as_str(), e.to_string()))?;
                flips.observe(i, out.codes);
                dampening = match (dampening, out.dampening) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                continue;
            }
            if let (Some(slot), TensorTarget::Quant(fmt)) =
                (slots.get(i).copied().flatten(), &entry.target)
            {
                let ParamMut::Two(p) = p else {
                    return Err(Error::tensor(
                        name.as_str(),
                        "only 2-D tensors can be quantized",
                    ));
                };
                learned_straight_through(p, &log_scales[slot], fmt)
                    .map_err(|e| Error::tensor(name.as_str(), e.to_string()))?;
                continue;
            }
            jobs.push((k, i));
        }
        let latents: Vec<Vec<f32>> = jobs
            .iter()
            .map(|&(k, _)| match &params[k].1 {
                ParamMut::One(p) => tensor_to_vec(p.val().detach()),
                ParamMut::Two(p) => tensor_to_vec(p.val().detach()),
            })
            .collect::<Result<_>>()?;
        let deltas = shared.deltas(latents, |j, w| {
            let entry = &plan.entries[jobs[j].1];
            let q = entry.apply(w, &plan.scales)?;
            Ok(q.iter().zip(w).map(|(a, b)| a - b).collect())
        })?;
        for (&(k, _), delta) in jobs.iter().zip(deltas) {
            match &mut params[k].1 {
                ParamMut::One(p) => straight_through(p, delta)?,
                ParamMut::Two(p) => straight_through(p, delta)?,
            }
        }
        drop(params);
        Ok((net, dampening))
    }
}

impl Trainable for QatNet {
    /// Logits `[batch, seq, vocab]` of the fake-quantized model, and the auxiliary loss: the
    /// SsmMoe balance loss plus the codebook dampening.
    fn train_forward(&self, tokens: &[Vec<u32>]) -> Result<(Tensor<3>, Option<Tensor<1>>)> {
        let (fq, dampening) = self.fake_quant_dampened()?;
        let (logits, aux) = match (&fq.llama, &fq.ssm_moe) {
            (Some(m), _) => m.train_forward(tokens)?,
            (_, Some(m)) => m.train_forward(tokens)?,
            _ => return Err(Error::invalid("QatNet without a model")),
        };
        let aux = match (aux, dampening) {
            (Some(a), Some(d)) => Some(a + d),
            (a, d) => a.or(d),
        };
        Ok((logits, aux))
    }
}
