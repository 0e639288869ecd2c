//! The packed export of a QAT network: every tensor stored as its plan says, with the very grid
//! the training forward used ([`crate::qat::qat_quantize`]), plus the report.

use std::collections::BTreeMap;

use half::f16;
use squish_core::checkpoint::{self, Checkpoint, Provenance, TensorData, WeightTensor};
use squish_core::quant::QBits;
use squish_core::{Error, Result, fsutil};

use crate::calibration::Calibration;
use crate::qat::{QatConfig, QatSummary, quantize_with_params};
use crate::qat_net::{QatNet, TensorTarget};
use crate::report::{KeptTensor, QuantReport, TableRow, TensorReport};

/// Stores the latent weights of `net` packed per its plan; errors name the tensor.
pub fn export(
    parent: &Checkpoint,
    net: &QatNet,
    cfg: &QatConfig,
    calib: Option<&Calibration>,
    summary: QatSummary,
) -> Result<(Checkpoint, QuantReport)> {
    let latent = net.latent_weights()?;
    let mut out = parent.clone();
    let (mut tensors, mut kept) = (Vec::new(), Vec::new());
    for (i, e) in net.plan.entries.iter().enumerate() {
        let w = latent.get(&e.name)?.to_f32(); // [shape]
        let nt = match &e.target {
            TensorTarget::F32 => WeightTensor::f32(e.shape.clone(), w)?,
            TensorTarget::F16 => WeightTensor {
                shape: e.shape.clone(),
                data: TensorData::F16(w.iter().map(|&x| f16::from_f32(x)).collect()),
            },
            TensorTarget::Quant(fmt) => {
                let (rows, cols) = (e.shape[0], e.shape[1]);
                let q = match net.learned_params(i)? {
                    Some(params) => quantize_with_params(&w, rows, cols, fmt, &params)
                        .map_err(|err| Error::tensor(&e.name, err.to_string()))?,
                    None => e.apply_packed(&w, &net.plan.scales)?,
                };
                let format = if q.bits == QBits::Int4 { "q4" } else { "q8" };
                let (group, bytes) = (q.group, q.storage_bytes());
                let nt = WeightTensor {
                    shape: e.shape.clone(),
                    data: TensorData::Quant(q),
                };
                tensors.push(packed_report(
                    parent, calib, &e.name, &nt, format, group, bytes,
                )?);
                out.weights.insert(e.name.clone(), nt);
                continue;
            }
            TensorTarget::Codebook { bits, group, .. } => {
                let c = net.codebook_tensor(i, &w)?.ok_or_else(|| {
                    Error::tensor(&e.name, "codebook tensor without trained levels")
                })?;
                let bytes = c.storage_bytes();
                let nt = WeightTensor {
                    shape: e.shape.clone(),
                    data: TensorData::Codebook(c),
                };
                let format = format!("cb{bits}");
                tensors.push(packed_report(
                    parent, calib, &e.name, &nt, &format, *group, bytes,
                )?);
                out.weights.insert(e.name.clone(), nt);
                continue;
            }
        };
        kept.push(KeptTensor {
            name: e.name.clone(),
            shape: nt.shape.clone(),
            format: nt.format_name().into(),
            bytes: nt.storage_bytes(),
        });
        out.weights.insert(e.name.clone(), nt);
    }
    let fmt = &cfg.quant.format;
    let codebook_bits = net.plan.entries.iter().find_map(|e| match e.target {
        TensorTarget::Codebook { bits, .. } => Some(bits),
        _ => None,
    });
    let config_json = serde_json::to_vec(cfg).map_err(|e| Error::invalid(e.to_string()))?;
    let overrides = cfg.per_tensor.len() + cfg.per_tensor_codebook.len();
    out.provenance = Provenance {
        stage: match (codebook_bits, fmt.bits) {
            (Some(_), _) => "codebook",
            (None, QBits::Int4) => "int4_native",
            (None, QBits::Int8) => "int8",
        }
        .into(),
        parent_sha256: Some(fsutil::sha256_hex(&checkpoint::to_bytes(parent)?)),
        config_hash: Some(fsutil::sha256_hex(&config_json)),
        tool: format!("squish-quant {}", env!("CARGO_PKG_VERSION")),
        details: BTreeMap::from([
            ("method".to_string(), "qat".to_string()),
            (
                "format".to_string(),
                match codebook_bits {
                    Some(b) => format!(
                        "cb{b}-{}",
                        fmt.group.map_or("row".to_string(), |g| format!("g{g}"))
                    ),
                    None => fmt.label(),
                },
            ),
            ("steps".to_string(), cfg.train.steps.to_string()),
            ("init".to_string(), format!("{:?}", cfg.init).to_lowercase()),
            ("overrides".to_string(), overrides.to_string()),
        ]),
    };
    let parameters = parent.weights.param_count();
    out.metrics = BTreeMap::from([("parameters".to_string(), parameters as f64)]);
    let tensor_bytes = out.weights.storage_bytes();
    let kept_bytes: usize = kept.iter().map(|k| k.bytes).sum();
    let report = QuantReport {
        method: if codebook_bits.is_some() {
            "qat+codebook"
        } else {
            "qat"
        }
        .into(),
        bits: codebook_bits.unwrap_or(fmt.bits_u32()),
        group: fmt.group,
        asym: fmt.asym,
        parameters,
        tensor_bytes,
        kept_bytes,
        kept_share: kept_bytes as f64 / tensor_bytes.max(1) as f64,
        calib_windows: calib.map_or(0, |c| c.windows),
        calib_tokens: calib.map_or(0, |c| c.tokens),
        tensors,
        kept,
        awq: Vec::new(),
        row: TableRow::default(),
        qat: Some(summary),
    };
    Ok((out, report))
}

/// The report row of a packed tensor `nt`, with its errors against the F32 parent (what QAT has
/// to make up for).
fn packed_report(
    parent: &Checkpoint,
    calib: Option<&Calibration>,
    name: &str,
    nt: &WeightTensor,
    format: &str,
    group: usize,
    bytes: usize,
) -> Result<TensorReport> {
    let (rows, cols) = (nt.shape[0], nt.shape[1]);
    let orig = parent.weights.get(name)?.to_f32(); // [rows, cols]
    let deq = nt.to_f32(); // [rows, cols]
    let stats = calib.and_then(|c| c.get(name));
    Ok(TensorReport::measure(
        name, rows, cols, &orig, &deq, format, group, bytes, stats,
    ))
}
