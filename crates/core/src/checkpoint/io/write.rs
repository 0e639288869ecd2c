//! Writing checkpoints: deterministic safetensors bytes (sorted names, sorted JSON keys), atomic saves.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;
use serde_json::{Value, json};

use super::super::{Checkpoint, FORMAT_VERSION, TensorData};
use super::{QUANT_PARTS, Stored, TensorMeta, check_finite_f32, f16_bytes, f32_bytes};
use crate::{Error, Result, fsutil};

/// Serializes a checkpoint to safetensors bytes (deterministic: sorted names, sorted JSON keys).
pub fn to_bytes(ckpt: &Checkpoint) -> Result<Vec<u8>> {
    ckpt.config.validate()?;
    let mut metas = BTreeMap::new();
    let mut stored: BTreeMap<String, Stored> = BTreeMap::new();
    for (name, t) in ckpt.weights.iter() {
        if QUANT_PARTS.iter().any(|p| name.ends_with(p)) {
            return Err(Error::tensor(
                name,
                "names ending in .qweight/.scales/.zeros/.levels are reserved for quantized tensors",
            ));
        }
        let mut meta = TensorMeta {
            format: t.format_name().into(),
            shape: t.shape.clone(),
            group: None,
            asym: None,
        };
        match &t.data {
            TensorData::F32(v) => {
                check_finite_f32(name, v)?;
                stored.insert(
                    name.clone(),
                    Stored {
                        dtype: Dtype::F32,
                        shape: t.shape.clone(),
                        bytes: f32_bytes(v),
                    },
                );
            }
            TensorData::F16(v) => {
                stored.insert(
                    name.clone(),
                    Stored {
                        dtype: Dtype::F16,
                        shape: t.shape.clone(),
                        bytes: f16_bytes(v),
                    },
                );
            }
            TensorData::Quant(q) => {
                q.validate(name)?;
                if t.shape != [q.rows, q.cols] {
                    return Err(Error::tensor(
                        name,
                        format!(
                            "logical shape {:?} but packed as [{}, {}]",
                            t.shape, q.rows, q.cols
                        ),
                    ));
                }
                meta.group = Some(q.group);
                meta.asym = Some(q.is_asymmetric());
                let ng = q.n_groups();
                stored.insert(
                    format!("{name}.qweight"),
                    Stored {
                        dtype: Dtype::U8,
                        shape: vec![q.rows, q.bits.row_bytes(q.cols)],
                        bytes: q.qweight.clone(),
                    },
                );
                stored.insert(
                    format!("{name}.scales"),
                    Stored {
                        dtype: Dtype::F16,
                        shape: vec![q.rows, ng],
                        bytes: f16_bytes(&q.scales),
                    },
                );
                if let Some(z) = &q.zeros {
                    stored.insert(
                        format!("{name}.zeros"),
                        Stored {
                            dtype: Dtype::U8,
                            shape: vec![q.rows, ng],
                            bytes: z.clone(),
                        },
                    );
                }
            }
            TensorData::Codebook(c) => {
                meta.group = Some(c.group);
                super::super::cb_io::store(name, &t.shape, c, &mut stored)?;
            }
        }
        metas.insert(name.clone(), meta);
    }

    let mut metadata = serde_json::Map::new();
    let s = |v: &dyn erased::Ser| v.json();
    metadata.insert(
        "squish.format".into(),
        Value::String(FORMAT_VERSION.to_string()),
    );
    metadata.insert(
        "squish.arch".into(),
        Value::String(ckpt.config.arch().into()),
    );
    metadata.insert("squish.config".into(), Value::String(s(&ckpt.config)?));
    // Only what the safetensors entries cannot say: bits, logical width and group of each
    // quantized tensor, in name order (`4/172/64,8/64/64,cb3/64/64,…`).
    let quant: Vec<String> = metas
        .values()
        .filter_map(|m| {
            let bits = match m.format.as_str() {
                "q4" => "4",
                "q8" => "8",
                f if f.starts_with("cb") => f,
                _ => return None,
            };
            Some(format!("{bits}/{}/{}", m.shape[1], m.group.unwrap_or(0)))
        })
        .collect();
    if !quant.is_empty() {
        metadata.insert("squish.quant".into(), Value::String(quant.join(",")));
    }
    metadata.insert(
        "squish.provenance".into(),
        Value::String(s(&ckpt.provenance)?),
    );
    if !ckpt.metrics.is_empty() {
        metadata.insert("squish.metrics".into(), Value::String(s(&ckpt.metrics)?));
    }
    if let Some(tok) = &ckpt.tokenizer {
        metadata.insert("squish.tokenizer".into(), Value::String(s(tok)?));
    }

    // Widest dtype first keeps every tensor aligned to its element size.
    let mut order: Vec<(&String, &Stored)> = stored.iter().collect();
    order.sort_by(|(an, a), (bn, b)| b.dtype.bitsize().cmp(&a.dtype.bitsize()).then(an.cmp(bn)));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), Value::Object(metadata));
    let mut offset = 0usize;
    for (name, st) in &order {
        let end = offset + st.bytes.len();
        header.insert((*name).clone(), json!({"dtype": dtype_name(st.dtype), "shape": st.shape, "data_offsets": [offset, end]}));
        offset = end;
    }
    let mut header_bytes = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| Error::invalid(format!("encoding header: {e}")))?;
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header_bytes.len() + offset);
    out.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    for (_, st) in order {
        out.extend_from_slice(&st.bytes);
    }
    Ok(out)
}

mod erased {
    /// Object-safe JSON encoding for the metadata values.
    pub trait Ser {
        fn json(&self) -> crate::Result<String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> crate::Result<String> {
            serde_json::to_string(self)
                .map_err(|e| crate::Error::invalid(format!("encoding metadata: {e}")))
        }
    }
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "F32",
        Dtype::F16 => "F16",
        _ => "U8",
    }
}

/// Writes a checkpoint atomically to `path`.
pub fn save(ckpt: &Checkpoint, path: &Path) -> Result<()> {
    fsutil::atomic_write(path, &to_bytes(ckpt)?)
}
