//! Reading checkpoints: strict parsing and validation of safetensors bytes, with bounded allocations.

use std::collections::BTreeMap;
use std::path::Path;

use half::f16;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::super::{
    Checkpoint, FORMAT_VERSION, Provenance, TensorData, TokenizerRef, WeightTensor, Weights,
};
use super::{MAX_HEADER_BYTES, QUANT_PARTS, TensorMeta, check_finite_f32};
use crate::codebook::CbScales;
use crate::config::ModelConfig;
use crate::quant::{QBits, QTensor};
use crate::{Error, Result, fsutil};

/// Loads and fully validates a checkpoint file.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = fsutil::read(path)?;
    load_bytes(&bytes).map_err(|e| match e {
        Error::Format { message, .. } => Error::format(path, message),
        Error::Tensor { name, message } => Error::format(path, format!("tensor {name}: {message}")),
        Error::Invalid(message) | Error::Config { message, .. } => Error::format(path, message),
        other => other,
    })
}

fn fmt_err(message: impl Into<String>) -> Error {
    Error::format("<checkpoint>", message)
}

/// Parses and validates checkpoint bytes (see [`load`]).
pub fn load_bytes(bytes: &[u8]) -> Result<Checkpoint> {
    if bytes.len() < 8 {
        return Err(fmt_err(format!(
            "file is {} bytes, shorter than the 8-byte safetensors length prefix (truncated?)",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let rest = (bytes.len() - 8) as u64;
    if n > MAX_HEADER_BYTES || n > rest {
        return Err(fmt_err(format!(
            "header length {n} exceeds the {rest} bytes after the prefix (limit {MAX_HEADER_BYTES}); truncated or forged file"
        )));
    }
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| fmt_err(format!("invalid safetensors: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| fmt_err(format!("invalid safetensors header: {e}")))?;
    let md = meta
        .metadata()
        .clone()
        .ok_or_else(|| fmt_err("no __metadata__: not a squish checkpoint"))?;
    let get = |k: &str| {
        md.get(k)
            .ok_or_else(|| fmt_err(format!("metadata key `{k}` missing")))
    };
    let version = get("squish.format")?;
    let version_num = version
        .parse::<u32>()
        .ok()
        .filter(|v| (1..=FORMAT_VERSION).contains(v));
    let Some(version_num) = version_num else {
        return Err(fmt_err(format!(
            "unknown squish.format version `{version}` (this build reads versions 1..={FORMAT_VERSION})"
        )));
    };
    let parse = |k: &str, v: &str| -> Result<Value> {
        serde_json::from_str(v)
            .map_err(|e| fmt_err(format!("metadata `{k}` is not valid JSON: {e}")))
    };
    let config: ModelConfig =
        serde_json::from_value(parse("squish.config", get("squish.config")?)?)
            .map_err(|e| fmt_err(format!("squish.config: {e}")))?;
    config.validate()?;
    if get("squish.arch")? != config.arch() {
        return Err(fmt_err(format!(
            "squish.arch `{}` disagrees with squish.config arch `{}`",
            get("squish.arch")?,
            config.arch()
        )));
    }
    let metas: BTreeMap<String, TensorMeta> = if version_num == 1 {
        serde_json::from_value(parse("squish.tensors", get("squish.tensors")?)?)
            .map_err(|e| fmt_err(format!("squish.tensors: {e}")))?
    } else {
        derive_metas(&st, md.get("squish.quant").map(String::as_str))?
    };
    let provenance: Provenance =
        serde_json::from_value(parse("squish.provenance", get("squish.provenance")?)?)
            .map_err(|e| fmt_err(format!("squish.provenance: {e}")))?;
    let metrics: BTreeMap<String, f64> = match md.get("squish.metrics") {
        Some(v) => serde_json::from_value(parse("squish.metrics", v)?)
            .map_err(|e| fmt_err(format!("squish.metrics: {e}")))?,
        None => BTreeMap::new(),
    };
    let tokenizer: Option<TokenizerRef> = match md.get("squish.tokenizer") {
        Some(v) => Some(
            serde_json::from_value(parse("squish.tokenizer", v)?)
                .map_err(|e| fmt_err(format!("squish.tokenizer: {e}")))?,
        ),
        None => None,
    };

    let mut used = std::collections::BTreeSet::new();
    let mut fetch = |name: String, dtype: Dtype, shape: &[usize]| -> Result<Vec<u8>> {
        let view = st
            .tensor(&name)
            .map_err(|_| Error::tensor(&name, "described in the metadata but not stored"))?;
        if view.dtype() != dtype || view.shape() != shape {
            return Err(Error::tensor(
                &name,
                format!(
                    "stored as {:?} {:?}, metadata says {:?} {:?}",
                    view.dtype(),
                    view.shape(),
                    dtype,
                    shape
                ),
            ));
        }
        used.insert(name);
        Ok(view.data().to_vec())
    };
    let mut weights = Weights::new();
    for (name, m) in &metas {
        // A forged shape whose element count overflows is rejected before anything is read.
        m.shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::tensor(name, "shape overflows"))?;
        let data = match m.format.as_str() {
            "f32" => {
                let b = fetch(name.clone(), Dtype::F32, &m.shape)?;
                let v: Vec<f32> = b
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                    .collect();
                check_finite_f32(name, &v)?;
                TensorData::F32(v)
            }
            "f16" => {
                let b = fetch(name.clone(), Dtype::F16, &m.shape)?;
                let v: Vec<f16> = b
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect();
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::tensor(
                        name,
                        format!("non-finite value {} at index {i}", v[i]),
                    ));
                }
                TensorData::F16(v)
            }
            "q4" | "q8" => {
                let bits = if m.format == "q4" {
                    QBits::Int4
                } else {
                    QBits::Int8
                };
                let [rows, cols] = m.shape[..] else {
                    return Err(Error::tensor(
                        name,
                        format!("quantized tensors are 2-D, metadata shape {:?}", m.shape),
                    ));
                };
                let group = m
                    .group
                    .ok_or_else(|| Error::tensor(name, "quantized tensor without `group`"))?;
                if group == 0 || group > cols {
                    return Err(Error::tensor(
                        name,
                        format!("group {group} not in 1..={cols}"),
                    ));
                }
                let ng = cols.div_ceil(group);
                let qweight = fetch(
                    format!("{name}.qweight"),
                    Dtype::U8,
                    &[rows, bits.row_bytes(cols)],
                )?;
                let sb = fetch(format!("{name}.scales"), Dtype::F16, &[rows, ng])?;
                let scales = sb
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let zeros = if m.asym.unwrap_or(false) {
                    Some(fetch(format!("{name}.zeros"), Dtype::U8, &[rows, ng])?)
                } else {
                    None
                };
                let q = QTensor {
                    bits,
                    rows,
                    cols,
                    group,
                    qweight,
                    scales,
                    zeros,
                };
                q.validate(name)?;
                TensorData::Quant(q)
            }
            "cb2" | "cb3" | "cb4" => {
                let bits = u32::from(m.format.as_bytes()[2] - b'0');
                let group = m
                    .group
                    .ok_or_else(|| Error::tensor(name, "codebook tensor without `group`"))?;
                // U8 scales are log8 codes (with F16 levels); anything else is read as F16 and
                // its dtype checked there.
                let format = match st.tensor(&format!("{name}.scales")) {
                    Ok(v) if v.dtype() == Dtype::U8 => CbScales::Log8,
                    _ => CbScales::F16,
                };
                let c = super::super::cb_io::load(name, bits, &m.shape, group, format, &mut fetch)?;
                TensorData::Codebook(c)
            }
            other => {
                return Err(Error::tensor(
                    name,
                    format!("unknown format `{other}` (expected f32, f16, q4, q8, cb2, cb3, cb4)"),
                ));
            }
        };
        weights.insert(
            name.clone(),
            WeightTensor {
                shape: m.shape.clone(),
                data,
            },
        );
    }
    for (name, _) in st.tensors() {
        if !used.contains(&name) {
            return Err(Error::tensor(
                &name,
                "stored but not described (orphan quantization part or unknown entry)",
            ));
        }
    }
    Ok(Checkpoint {
        config,
        weights,
        provenance,
        metrics,
        tokenizer,
    })
}

/// The logical tensors of a version-2 file: every stored F32/F16 entry is a tensor of that format;
/// every `X.qweight` (with `X.scales`, and `X.zeros` when asymmetric) is the quantized tensor `X`
/// whose bits, width and group are the matching entry of `squish.quant` (entries in name order).
/// Stored parts are checked against these by the caller (dtype, shape, orphans).
fn derive_metas(st: &SafeTensors, quant: Option<&str>) -> Result<BTreeMap<String, TensorMeta>> {
    let mut metas = BTreeMap::new();
    let mut qnames = BTreeMap::new(); // logical name -> rows
    for (name, view) in st.tensors() {
        if let Some(base) = name.strip_suffix(".qweight") {
            let rows = view.shape().first().copied().unwrap_or(0);
            qnames.insert(base.to_string(), rows);
            continue;
        }
        if QUANT_PARTS.iter().any(|p| name.ends_with(p)) {
            continue; // scales / zeros: fetched with their qweight; orphans are caught later
        }
        let format = match view.dtype() {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            other => {
                return Err(Error::tensor(
                    &name,
                    format!("unquantized tensors are F32 or F16, stored as {other:?}"),
                ));
            }
        };
        metas.insert(
            name.clone(),
            TensorMeta {
                format: format.into(),
                shape: view.shape().to_vec(),
                group: None,
                asym: None,
            },
        );
    }
    let entries: Vec<&str> = match quant {
        Some(q) if !q.is_empty() => q.split(',').collect(),
        _ => Vec::new(),
    };
    if entries.len() != qnames.len() {
        return Err(fmt_err(format!(
            "squish.quant describes {} quantized tensors, {} are stored",
            entries.len(),
            qnames.len()
        )));
    }
    for ((name, rows), entry) in qnames.into_iter().zip(entries) {
        // `bits/cols/group` (bits 4 or 8) or, for a codebook, `cbB/cols/group` (B = 2, 3, 4).
        let fields: Vec<&str> = entry.split('/').collect();
        let [kind, cols, group] = fields[..] else {
            return Err(Error::tensor(
                &name,
                format!("squish.quant entry `{entry}` is not bits/cols/group"),
            ));
        };
        let format = match kind {
            "4" => "q4",
            "8" => "q8",
            "cb2" => "cb2",
            "cb3" => "cb3",
            "cb4" => "cb4",
            other => {
                return Err(Error::tensor(
                    &name,
                    format!("{other} bits (4 or 8; codebooks cb2, cb3 or cb4)"),
                ));
            }
        };
        let (Ok(cols), Ok(group)) = (cols.parse::<usize>(), group.parse::<usize>()) else {
            return Err(Error::tensor(
                &name,
                format!("bad squish.quant entry `{entry}`"),
            ));
        };
        if metas.contains_key(&name) {
            return Err(Error::tensor(
                &name,
                "stored both unquantized and quantized",
            ));
        }
        let asym = st.tensor(&format!("{name}.zeros")).is_ok();
        metas.insert(
            name,
            TensorMeta {
                format: format.into(),
                shape: vec![rows, cols],
                group: Some(group),
                asym: Some(asym),
            },
        );
    }
    Ok(metas)
}
