//! The per-tensor plan of a QAT run: what every tensor of the model becomes (kept F32/F16,
//! packed INT4/INT8, or a trained codebook), built from a [`QatConfig`] and the checkpoint
//! ([`build_plan`]), and how a planned tensor maps its latent values ([`PlanEntry::apply`]).

use half::f16;
use serde::{Deserialize, Serialize};
use squish_core::checkpoint::{Checkpoint, TensorData};
use squish_core::quant::QTensor;
use squish_core::{Error, Result};

use crate::calibration::Calibration;
use crate::codebook::CodebookSpec;
use crate::pipeline::{SmallFormat, is_linear_weight};
use crate::qat::{QatConfig, QatScales, qat_quantize};
use crate::spec::QuantFormat;
use squish_core::codebook::CbScales;

/// Storage of one tensor after QAT.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorTarget {
    /// Kept F32 (trained without a grid).
    F32,
    /// Kept, stored F16 (the forward rounds it to F16).
    F16,
    /// Packed INT4/INT8 with the given format.
    Quant(QuantFormat),
    /// A codebook of `2^bits` trained levels with trained scales per group of `group` columns
    /// ([`crate::qat_codebook`]).
    Codebook {
        /// Bits per code: 2, 3 or 4.
        bits: u32,
        /// Group size along the row (the last group may be short).
        group: usize,
        /// How the scales are stored (and rounded in the forward).
        scales: CbScales,
    },
}

/// A per-tensor codebook override of a QAT ([`QatConfig::per_tensor_codebook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodebookTarget {
    /// Bits per code: 2, 3 or 4.
    pub bits: u32,
    /// Group size along the row; `None` = one group per row.
    pub group: Option<usize>,
    /// How the scales are stored.
    #[serde(default)]
    pub scales: CbScales,
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
    /// Weight of the codebook tensors' oscillation dampening ([`crate::qat_codebook`]); 0 = off.
    pub dampen: f32,
}

impl PlanEntry {
    /// The values the forward (and the export) sees for latent values `w` (row-major `shape`).
    pub fn apply(&self, w: &[f32], scales: &QatScales) -> Result<Vec<f32>> {
        match &self.target {
            TensorTarget::F32 => Ok(w.to_vec()),
            TensorTarget::F16 => Ok(w.iter().map(|&x| f16::from_f32(x).to_f32()).collect()),
            TensorTarget::Quant(_) => Ok(self.apply_packed(w, scales)?.dequantize()),
            TensorTarget::Codebook { .. } => Err(Error::tensor(
                &self.name,
                "a codebook tensor maps through its trained levels (QatNet::fake_quant)",
            )),
        }
    }

    /// The packed tensor of a quantized entry for latent values `w` ([`qat_quantize`]).
    pub fn apply_packed(&self, w: &[f32], scales: &QatScales) -> Result<QTensor> {
        let TensorTarget::Quant(fmt) = &self.target else {
            return Err(Error::tensor(
                &self.name,
                "not planned as a quantized tensor",
            ));
        };
        let [rows, cols] = self.shape[..] else {
            return Err(Error::tensor(
                &self.name,
                "only 2-D tensors can be quantized",
            ));
        };
        qat_quantize(w, rows, cols, fmt, scales, self.importance.as_deref())
            .map_err(|e| Error::tensor(&self.name, e.to_string()))
    }
}

/// The target of a [`CodebookTarget`] override of tensor `name` (logical `shape`): 2-D, 2–4 bits,
/// a group no wider than the row.
fn codebook_override(name: &str, shape: &[usize], cb: &CodebookTarget) -> Result<TensorTarget> {
    let [_, cols] = shape[..] else {
        return Err(Error::tensor(
            name,
            format!("a codebook needs a 2-D tensor, this one is {shape:?}"),
        ));
    };
    squish_core::codebook::check_bits(cb.bits).map_err(|e| Error::tensor(name, e.to_string()))?;
    let group = cb.group.unwrap_or(cols);
    if group == 0 || group > cols {
        return Err(Error::tensor(
            name,
            format!("codebook group {group} not in 1..={cols} (the row width)"),
        ));
    }
    Ok(TensorTarget::Codebook {
        bits: cb.bits,
        group,
        scales: cb.scales,
    })
}

/// The per-tensor plan of `ckpt` under `cfg` (name order). The default format on a row narrower
/// than its group uses one group per row. Errors: unknown override names, quantizing a non-2-D
/// tensor, an override's group wider than the row, AWQ, an already-quantized input.
pub fn build_plan(
    ckpt: &Checkpoint,
    cfg: &QatConfig,
    calib: Option<&Calibration>,
) -> Result<QatPlan> {
    if cfg.quant.awq.is_some() {
        return Err(Error::invalid(
            "QAT with AWQ scaling is not supported (fold AWQ first, or set awq = None)",
        ));
    }
    if let Some(name) = cfg
        .per_tensor_codebook
        .keys()
        .find(|n| !ckpt.weights.contains(n) || cfg.per_tensor.contains_key(*n))
    {
        return Err(Error::tensor(
            name,
            "codebook override names no tensor of the checkpoint, or the tensor also has a \
             per_tensor format",
        ));
    }
    if let Some(name) = cfg.per_tensor.keys().find(|n| !ckpt.weights.contains(n)) {
        return Err(Error::tensor(
            name,
            "per-tensor QAT format names a tensor that is not in the checkpoint",
        ));
    }
    let small = match cfg.quant.small {
        SmallFormat::F32 => TensorTarget::F32,
        SmallFormat::F16 => TensorTarget::F16,
    };
    let codebook_bits = match cfg.quant.codebook {
        None => None,
        Some(CodebookSpec {
            bits,
            learned: true,
            scales,
        }) => {
            squish_core::codebook::check_bits(bits)?;
            Some((bits, scales))
        }
        Some(CodebookSpec { learned: false, .. }) => {
            return Err(Error::invalid(
                "QAT trains the levels of a codebook: use codebook = \"tensor\" (a fixed uniform \
                 codebook is the integer grid, codebook = \"none\")",
            ));
        }
    };
    let mut entries = Vec::new();
    for (name, t) in ckpt.weights.iter() {
        if matches!(t.data, TensorData::Quant(_)) {
            return Err(Error::tensor(
                name,
                "already quantized: QAT starts from the F32 checkpoint",
            ));
        }
        let is_emb = name == "tok_embeddings.weight" || name == "output.weight";
        let default_q = t.shape.len() == 2
            && is_linear_weight(name)
            && (cfg.quant.quantize_embedding || !is_emb)
            && !cfg.quant.keep.iter().any(|k| name.contains(k.as_str()));
        // The default format fits itself to the row (`QuantFormat::fitted`: one group per row
        // where the group is wider, e.g. SsmMoe `dt_proj`); an explicit override must fit.
        let fmt = match cfg.per_tensor.get(name) {
            Some(f) => *f,
            None => default_q.then(|| cfg.quant.format.fitted(t.shape[1])),
        };
        let target = match (cfg.per_tensor_codebook.get(name), fmt) {
            (Some(cb), _) => codebook_override(name, &t.shape, cb)?,
            (None, None) => small.clone(),
            (None, Some(f)) => {
                let [_, cols] = t.shape[..] else {
                    return Err(Error::tensor(
                        name,
                        format!(
                            "cannot quantize a {}-D tensor (only 2-D weights)",
                            t.shape.len()
                        ),
                    ));
                };
                let group = f
                    .group_for(cols)
                    .map_err(|e| Error::tensor(name, e.to_string()))?;
                // The default format becomes the codebook; explicit overrides stay uniform.
                match codebook_bits {
                    Some((bits, scales)) if !cfg.per_tensor.contains_key(name) => {
                        TensorTarget::Codebook {
                            bits,
                            group,
                            scales,
                        }
                    }
                    _ => TensorTarget::Quant(f),
                }
            }
        };
        if let (TensorTarget::Quant(f), QatScales::Learned(_)) = (&target, &cfg.scales)
            && f.asym
        {
            return Err(Error::tensor(
                name,
                "learned QAT scales support symmetric formats only (drop --asym or use mse scales)",
            ));
        }
        let weighted = match (&target, &cfg.scales) {
            (TensorTarget::Quant(_), QatScales::Mse(m) | QatScales::Learned(m)) => m.weighted,
            // The codebook's initial levels are fit weighted by the inputs' second moments.
            (TensorTarget::Codebook { .. }, _) => true,
            _ => false,
        };
        let importance = match calib.and_then(|c| c.get(name)) {
            Some(s) if weighted => {
                let m = s.col_sq_mean();
                let mean = m.iter().sum::<f64>() / m.len().max(1) as f64;
                Some(m.iter().map(|&x| (x + 1e-3 * mean) as f32).collect())
            }
            _ => None,
        };
        entries.push(PlanEntry {
            name: name.clone(),
            shape: t.shape.clone(),
            target,
            importance,
        });
    }
    // The training loop weighs a model's auxiliary loss by `balance_coef` (it was made for the
    // MoE balance loss); the dampening rides along, so it is divided by that weight here.
    let dampen = match (cfg.dampen, cfg.train.balance_coef) {
        (0.0, _) => 0.0,
        (d, b) if d > 0.0 && d.is_finite() && b > 0.0 => d / b,
        (d, b) => {
            return Err(Error::invalid(format!(
                "QAT dampening {d} needs a finite positive weight and balance_coef > 0 (is {b})"
            )));
        }
    };
    Ok(QatPlan {
        entries,
        scales: cfg.scales.clone(),
        dampen,
    })
}

/// The plan that keeps every tensor of `teacher` in F32 (the distillation teacher's network).
/// Errors when a tensor is already quantized.
pub(crate) fn f32_plan(teacher: &Checkpoint, scales: &QatScales) -> Result<QatPlan> {
    let entries = teacher
        .weights
        .iter()
        .map(|(name, t)| match t.data {
            TensorData::Quant(_) => Err(Error::tensor(
                name,
                "the QAT teacher must be an F32 checkpoint (this tensor is quantized)",
            )),
            _ => Ok(PlanEntry {
                name: name.clone(),
                shape: t.shape.clone(),
                target: TensorTarget::F32,
                importance: None,
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(QatPlan {
        entries,
        scales: scales.clone(),
        dampen: 0.0,
    })
}
