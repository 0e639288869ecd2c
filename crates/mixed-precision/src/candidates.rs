//! One tensor in one candidate format: the stored data (exactly what the final checkpoint will
//! hold), its bytes, the method that chose the codes, and the HAWQ-style proxy error.

use squish_core::checkpoint::{Checkpoint, TensorData, WeightTensor, Weights};
use squish_core::codebook::CbScales;
use squish_core::config::ModelConfig;
use squish_core::fsutil;
use squish_core::{Error, Result};
use squish_quant::{
    CodebookSpec, GptqConfig, Method, MseConfig, QuantConfig, QuantFormat, QuantSpec, SmallFormat,
    TensorStats, quantize_checkpoint, quantize_codebook, quantize_tensor,
};

use crate::config::CandidateFormat;

/// A tensor stored in one candidate format.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The candidate.
    pub format: CandidateFormat,
    /// The stored values.
    pub data: TensorData,
    /// Payload bytes in a checkpoint.
    pub bytes: u64,
    /// Header bytes the tensor adds in this format (set by [`crate::mix::items`]; 0 here).
    pub header_bytes: u64,
    /// Method that chose the codes (`f32`, `f16`, `gptq`, `mse`, `rtn`).
    pub method: String,
    /// Cheap proxy of the damage: with calibration statistics the mean squared layer-output
    /// error per token `tr(ΔW XᵀX ΔWᵀ)/n` (HAWQ-style, the inputs' second moments weigh the weight
    /// error); without, the mean squared weight error per row `‖ΔW‖²/rows`.
    pub proxy: f64,
    /// sha256 of the stored bytes (checks that a cached measurement used the same tensor).
    pub sha256: String,
}

/// Serialized bytes of a tensor's data (for hashing).
fn data_bytes(d: &TensorData) -> Vec<u8> {
    match d {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Quant(q) => {
            let mut b = vec![q.bits.bits() as u8];
            b.extend((q.rows as u64).to_le_bytes());
            b.extend((q.cols as u64).to_le_bytes());
            b.extend((q.group as u64).to_le_bytes());
            b.extend(&q.qweight);
            b.extend(q.scales.iter().flat_map(|x| x.to_le_bytes()));
            if let Some(z) = &q.zeros {
                b.extend(z);
            }
            b
        }
        TensorData::Codebook(c) => {
            let mut b = vec![c.bits as u8 | 0x80, c.scale_format as u8];
            b.extend((c.rows as u64).to_le_bytes());
            b.extend((c.cols as u64).to_le_bytes());
            b.extend((c.group as u64).to_le_bytes());
            b.extend(&c.codes);
            b.extend(c.scales.iter().flat_map(|x| x.to_le_bytes()));
            b.extend(c.levels.iter().flat_map(|x| x.to_le_bytes()));
            b
        }
    }
}

fn proxy_of(w: &[f32], deq: &[f32], rows: usize, stats: Option<&TensorStats>) -> f64 {
    let d: Vec<f32> = w.iter().zip(deq).map(|(a, b)| a - b).collect();
    match stats {
        Some(s) if rows > 0 && s.cols * rows == w.len() => {
            s.output_inner(&d, &d, rows).max(0.0) / s.n.max(1) as f64
        }
        _ => d.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / rows.max(1) as f64,
    }
}

/// F32 → F16 through squish-quant's own conversion of kept tensors (`SmallFormat::F16`), so the
/// rounding is the one the quantization stage uses (and no extra dependency is needed).
fn to_f16(config: &ModelConfig, name: &str, t: &WeightTensor) -> Result<TensorData> {
    let mut weights = Weights::new();
    weights.insert(name, t.clone());
    let one = Checkpoint {
        config: config.clone(),
        weights,
        provenance: Default::default(),
        metrics: Default::default(),
        tokenizer: None,
    };
    let mut cfg = QuantConfig::new(QuantFormat::new(8, None, false)?, Method::Rtn);
    cfg.small = SmallFormat::F16;
    cfg.quantize_embedding = false;
    cfg.keep = vec![name.to_string()];
    let (out, _) = quantize_checkpoint(&one, &cfg, None)?;
    Ok(out.weights.get(name)?.data.clone())
}

/// `t` (F32 values) stored as `format`. `Ok(None)` when the format does not apply (an integer
/// or codebook format for a 1-D tensor, or a group wider than the row). With `stats` and `gptq`,
/// GPTQ and activation-weighted MSE clipping both quantize and the one with the lower
/// layer-output error is kept; without statistics, MSE clipping and RTN compete on the weight
/// error. A codebook's levels fit weighted by `stats`; GPTQ's codes and the nearest level's
/// compete alike. Deterministic: the same inputs give the same bytes.
pub fn make_variant(
    config: &ModelConfig,
    name: &str,
    t: &WeightTensor,
    format: CandidateFormat,
    stats: Option<&TensorStats>,
    gptq: bool,
) -> Result<Option<Variant>> {
    let w = match &t.data {
        TensorData::F32(v) => v.clone(),
        TensorData::F16(_) => t.to_f32(),
        TensorData::Quant(_) | TensorData::Codebook(_) => {
            return Err(Error::tensor(
                name,
                "already quantized: mixed precision needs the unquantized checkpoint",
            ));
        }
    };
    let rows = t.shape.first().copied().unwrap_or(1);
    let stats = stats.filter(|s| t.shape.len() == 2 && s.cols == t.shape[1]);
    let finish = |data: TensorData, method: &str, deq: &[f32]| -> Variant {
        let bytes = WeightTensor {
            shape: t.shape.clone(),
            data: data.clone(),
        }
        .storage_bytes() as u64;
        Variant {
            format,
            sha256: fsutil::sha256_hex(&data_bytes(&data)),
            proxy: proxy_of(&w, deq, rows, stats),
            data,
            bytes,
            header_bytes: 0,
            method: method.into(),
        }
    };
    match format {
        CandidateFormat::F32 => Ok(Some(finish(TensorData::F32(w.clone()), "f32", &w))),
        CandidateFormat::F16 => {
            let h = to_f16(config, name, t)?;
            let deq = WeightTensor {
                shape: t.shape.clone(),
                data: h.clone(),
            }
            .to_f32();
            Ok(Some(finish(h, "f16", &deq)))
        }
        CandidateFormat::Codebook { bits, group } => {
            let [_, cols] = t.shape[..] else {
                return Ok(None);
            };
            let group = group.unwrap_or(cols);
            if group > cols {
                return Ok(None);
            }
            let spec = CodebookSpec {
                bits,
                learned: true,
                scales: CbScales::Log8,
            };
            let gptq_cfg = GptqConfig::default();
            let methods: Vec<Option<&GptqConfig>> = match stats {
                Some(_) if gptq => vec![Some(&gptq_cfg), None],
                _ => vec![None],
            };
            let mut best: Option<Variant> = None;
            for m in methods {
                let c = quantize_codebook(&w, rows, cols, spec, group, stats, m)
                    .map_err(|e| Error::tensor(name, format!("{}: {e}", format.label())))?;
                let deq = c.dequantize();
                let v = finish(
                    TensorData::Codebook(c),
                    if m.is_some() { "gptq" } else { "rtn" },
                    &deq,
                );
                if best.as_ref().is_none_or(|b| v.proxy < b.proxy) {
                    best = Some(v);
                }
            }
            Ok(best)
        }
        CandidateFormat::Int { .. } => {
            let Some(qf) = format.quant_format()? else {
                return Ok(None);
            };
            if t.shape.len() != 2 || qf.group_for(t.shape[1]).is_err() {
                return Ok(None);
            }
            let cols = t.shape[1];
            let methods: Vec<Method> = match stats {
                Some(_) if gptq => vec![
                    Method::Gptq(GptqConfig::default()),
                    Method::Mse(MseConfig::default()),
                ],
                Some(_) => vec![Method::Mse(MseConfig::default())],
                None => vec![
                    Method::Mse(MseConfig {
                        weighted: false,
                        ..MseConfig::default()
                    }),
                    Method::Rtn,
                ],
            };
            let mut best: Option<(f64, Variant)> = None;
            let mut last_err = None;
            for m in methods {
                let spec = QuantSpec {
                    format: qf,
                    method: m.clone(),
                };
                match quantize_tensor(&w, rows, cols, &spec, stats) {
                    Ok(q) => {
                        let deq = q.dequantize();
                        let v = finish(TensorData::Quant(q), m.name(), &deq);
                        // Both proxies are the objective each method minimises (output or weight
                        // error); keep the strictly better one, ties to the first.
                        if best.as_ref().is_none_or(|(e, _)| v.proxy < *e) {
                            best = Some((v.proxy, v));
                        }
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            match (best, last_err) {
                (Some((_, v)), _) => Ok(Some(v)),
                (None, Some(e)) => Err(Error::tensor(name, format!("{}: {e}", format.label()))),
                (None, None) => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        ModelConfig::Llama(squish_core::config::LlamaConfig {
            dim: 16,
            hidden_dim: 44,
            n_layers: 1,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 40,
            seq_len: 32,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        })
    }

    #[test]
    fn variants_are_deterministic_and_sized() {
        let w: Vec<f32> = (0..8 * 64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let t = WeightTensor::f32(vec![8, 64], w).unwrap();
        let c = CandidateFormat::parse("int4-g32-asym").unwrap();
        let a = make_variant(&cfg(), "x", &t, c, None, true)
            .unwrap()
            .unwrap();
        let b = make_variant(&cfg(), "x", &t, c, None, true)
            .unwrap()
            .unwrap();
        assert_eq!(a, b);
        // 8 rows × 32 code bytes + 8 × 2 groups × (2 scale + 1 zero) bytes.
        assert_eq!(a.bytes, 8 * 32 + 8 * 2 * 3);
        let f = make_variant(&cfg(), "x", &t, CandidateFormat::F16, None, true)
            .unwrap()
            .unwrap();
        assert_eq!(f.bytes, 8 * 64 * 2);
        assert!(f.proxy < a.proxy);
        let g128 = CandidateFormat::parse("int4-g128-sym").unwrap();
        assert!(
            make_variant(&cfg(), "x", &t, g128, None, true)
                .unwrap()
                .is_none()
        );
        let v = WeightTensor::f32(vec![4], vec![1.0; 4]).unwrap();
        assert!(
            make_variant(&cfg(), "n", &v, c, None, true)
                .unwrap()
                .is_none()
        );
        // A 3-bit codebook: 8 rows × 24 code bytes + 8 × 1 log8 scale + 8 F16 levels, and less
        // weight error than INT4's 16-level grid would need to beat.
        let cb3 = CandidateFormat::parse("cb3-g64").unwrap();
        let k = make_variant(&cfg(), "x", &t, cb3, None, true)
            .unwrap()
            .unwrap();
        assert_eq!(k.bytes, 8 * 24 + 8 + 2 * 8);
        assert_eq!(
            k,
            make_variant(&cfg(), "x", &t, cb3, None, true)
                .unwrap()
                .unwrap()
        );
        assert!(matches!(k.data, TensorData::Codebook(_)));
        assert!(k.proxy > f.proxy && k.proxy.is_finite());
        let wide = CandidateFormat::parse("cb2-g128").unwrap();
        assert!(
            make_variant(&cfg(), "x", &t, wide, None, true)
                .unwrap()
                .is_none()
        );
        assert!(
            make_variant(&cfg(), "n", &v, cb3, None, true)
                .unwrap()
                .is_none()
        );
    }
}
