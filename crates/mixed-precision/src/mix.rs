//! The tensors the allocation decides (items with their variants and measurements), building a
//! checkpoint from one choice per item, and measuring it.

use std::collections::BTreeMap;

use squish_core::checkpoint::{self, Checkpoint, Provenance, WeightTensor};
use squish_core::{Error, Result};
use squish_kernels::measure::native_perplexity;
use squish_quant::Calibration;
use squish_quant::pipeline::is_linear_weight;

use crate::candidates::{Variant, make_variant};
use crate::config::{CandidateFormat, MixedConfig, Objective};
use crate::sensitivity::{Score, is_f32};

/// One tensor the allocation decides.
#[derive(Debug, Clone)]
pub struct Item {
    /// Tensor name.
    pub name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// True for 2-D linear / embedding weights (false: small tensors choosing F32 or F16).
    pub quantizable: bool,
    /// The options (applicable candidates).
    pub options: Vec<Variant>,
    /// Measured score of each option (filled after the sensitivity runs).
    pub scores: Vec<Score>,
}

impl Item {
    /// The option index of `format`, if present.
    pub fn index_of(&self, format: CandidateFormat) -> Option<usize> {
        self.options.iter().position(|v| v.format == format)
    }
    /// The loss the DP sees for option `k`.
    pub fn loss(&self, k: usize, objective: Objective) -> f64 {
        let s = &self.scores[k];
        match objective {
            Objective::DeltaNats => s.dnats.max(0.0),
            Objective::Kl => s.kl.max(0.0),
        }
    }
}

/// Header bytes a tensor adds to a file in the format of `v`, beyond its payload: measured by
/// serializing a checkpoint holding only that tensor (the JSON entries of `.qweight`, `.scales`,
/// `.zeros` and `squish.tensors` differ by format).
fn header_cost(ckpt: &Checkpoint, empty: u64, name: &str, v: &Variant) -> Result<u64> {
    let mut one = Checkpoint {
        config: ckpt.config.clone(),
        weights: Default::default(),
        provenance: Default::default(),
        metrics: Default::default(),
        tokenizer: None,
    };
    one.weights.insert(
        name,
        WeightTensor {
            shape: ckpt.weights.get(name)?.shape.clone(),
            data: v.data.clone(),
        },
    );
    Ok((file_bytes(&one)?).saturating_sub(empty + v.bytes))
}

/// The items of `ckpt` and their variants. Errors when a tensor is already quantized.
pub fn items(
    ckpt: &Checkpoint,
    cfg: &MixedConfig,
    stats: Option<&Calibration>,
) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    let empty = file_bytes(&Checkpoint {
        config: ckpt.config.clone(),
        weights: Default::default(),
        provenance: Default::default(),
        metrics: Default::default(),
        tokenizer: None,
    })?;
    for (name, t) in ckpt.weights.iter() {
        if !is_f32(t) {
            return Err(Error::tensor(
                name,
                format!(
                    "stored as {}: mixed precision needs the F32 checkpoint",
                    t.format_name()
                ),
            ));
        }
        let quantizable = t.shape.len() == 2 && is_linear_weight(name);
        let formats: Vec<CandidateFormat> = if quantizable {
            cfg.candidates.clone()
        } else if cfg.small_f16 {
            vec![CandidateFormat::F32, CandidateFormat::F16]
        } else {
            continue;
        };
        let st = stats.and_then(|s| s.get(name));
        let mut options = Vec::new();
        for f in formats {
            if options.iter().any(|v: &Variant| v.format == f) {
                continue;
            }
            if let Some(mut v) = make_variant(&ckpt.config, name, t, f, st, cfg.gptq)? {
                v.header_bytes = header_cost(ckpt, empty, name, &v)?;
                options.push(v);
            }
        }
        if options.is_empty() {
            tracing::warn!("{name}: no candidate applies, kept as F32");
            continue;
        }
        out.push(Item {
            name: name.clone(),
            shape: t.shape.clone(),
            quantizable,
            options,
            scores: Vec::new(),
        });
    }
    Ok(out)
}

/// `ckpt` with option `picks[i]` for every item (other tensors unchanged), with provenance.
pub fn build(
    ckpt: &Checkpoint,
    items: &[Item],
    picks: &[usize],
    provenance: &Provenance,
) -> Checkpoint {
    let mut out = ckpt.clone();
    for (it, &k) in items.iter().zip(picks) {
        out.weights.insert(
            it.name.clone(),
            WeightTensor {
                shape: it.shape.clone(),
                data: it.options[k].data.clone(),
            },
        );
    }
    out.provenance = provenance.clone();
    out.metrics = BTreeMap::from([("parameters".to_string(), ckpt.weights.param_count() as f64)]);
    out
}

/// Real file bytes of `ckpt`.
pub fn file_bytes(ckpt: &Checkpoint) -> Result<u64> {
    Ok(checkpoint::to_bytes(ckpt)?.len() as u64)
}

/// Payload bytes of the items under `picks`.
pub fn payload(items: &[Item], picks: &[usize]) -> u64 {
    items
        .iter()
        .zip(picks)
        .map(|(it, &k)| it.options[k].bytes)
        .sum()
}

/// Predicted loss of `picks` under `objective`.
pub fn predicted(items: &[Item], picks: &[usize], objective: Objective) -> f64 {
    items
        .iter()
        .zip(picks)
        .map(|(it, &k)| it.loss(k, objective))
        .sum()
}

/// Perplexity of `ckpt` on the native runtime (llama-cpp protocol, context `ctx`).
pub fn measure_ppl(ckpt: &Checkpoint, valid: &[u32], ctx: usize, bos: u32) -> Result<f64> {
    Ok(native_perplexity(ckpt, valid, ctx, bos, &mut |_, _| {})?.ppl)
}

/// The uniform assignment for `format`: quantizable items take it (F16, else their first option,
/// where it does not apply), small items stay F32. `None` when no item has the format.
pub fn uniform_picks(items: &[Item], format: CandidateFormat) -> Option<Vec<usize>> {
    items
        .iter()
        .any(|it| it.index_of(format).is_some())
        .then(|| {
            items
                .iter()
                .map(|it| {
                    if it.quantizable {
                        it.index_of(format)
                            .or_else(|| it.index_of(CandidateFormat::F16))
                            .unwrap_or(0)
                    } else {
                        it.index_of(CandidateFormat::F32).unwrap_or(0)
                    }
                })
                .collect()
        })
}
