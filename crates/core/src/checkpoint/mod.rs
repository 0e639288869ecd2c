//! The squish checkpoint: a safetensors file with squish metadata, and [`Weights`], the
//! framework-free map of named tensors every stage reads and writes.
//!
//! Layout on disk (see `ARCHITECTURE.md`): tensors keep their module-path names; a quantized
//! weight `W` is stored as `W.qweight` (U8), `W.scales` (F16) and `W.zeros` (U8, asymmetric only)
//! in [`crate::quant`]'s layout; a codebook weight as `W.qweight` (U8, [`crate::codebook`]'s
//! layout), `W.scales` (F16) and `W.levels` (F32 `[2^bits]`). `__metadata__` holds `squish.format`, `squish.arch`,
//! `squish.config`, `squish.quant` (`bits/cols/group` of each quantized tensor, in name order;
//! absent when none is quantized), `squish.provenance`, and when present `squish.metrics` and
//! `squish.tokenizer` (the content-named tokenizer file beside it, see [`write_tokenizer`]).
//! Files are written deterministically (sorted keys, no timestamps), so the
//! same inputs give the same bytes.

mod cb_io;
mod io;
mod tokenizer_file;

use std::collections::BTreeMap;

use half::f16;
use serde::{Deserialize, Serialize};

use crate::codebook::CbTensor;
use crate::config::ModelConfig;
use crate::quant::QTensor;
use crate::{Error, Result};

pub use io::{MAX_HEADER_BYTES, load, load_bytes, save, to_bytes};
pub use tokenizer_file::{
    LEGACY_TOKENIZER_FILE, load_tokenizer, read_tokenizer, tokenizer_file_name, tokenizer_file_of,
    tokenizer_path, write_tokenizer,
};

/// The checkpoint format version this build writes and reads.
/// Version 2 (compact header): per-tensor formats and shapes come from the safetensors entries,
/// and `squish.quant` adds only bits/width/group per quantized tensor. Version 1 files (with the
/// JSON `squish.tensors`) are still read.
pub const FORMAT_VERSION: u32 = 2;

/// The values of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 16-bit floats.
    F16(Vec<f16>),
    /// Packed INT4/INT8 codes with group scales (2-D only).
    Quant(QTensor),
    /// Packed 2/3/4-bit codes into a per-tensor codebook, with group scales (2-D only).
    Codebook(CbTensor),
}

/// A named tensor's logical shape and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    /// Logical shape (for a quantized weight: `[rows, cols]` of the dequantized matrix).
    pub shape: Vec<usize>,
    /// Values in one of the storage formats.
    pub data: TensorData,
}

impl WeightTensor {
    /// An F32 tensor; `values.len()` must equal the product of `shape`.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(Error::invalid(format!(
                "shape {shape:?} holds {n} values, got {}",
                values.len()
            )));
        }
        Ok(WeightTensor {
            shape,
            data: TensorData::F32(values),
        })
    }

    /// Number of logical elements (parameters).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for the packed formats (INT4/INT8 and codebook).
    pub fn is_quantized(&self) -> bool {
        matches!(self.data, TensorData::Quant(_) | TensorData::Codebook(_))
    }

    /// The format name: `f32`, `f16`, `q8`, `q4` or `cb2` / `cb3` / `cb4` (codebook).
    pub fn format_name(&self) -> &'static str {
        match &self.data {
            TensorData::F32(_) => "f32",
            TensorData::F16(_) => "f16",
            TensorData::Quant(q) => match q.bits {
                crate::quant::QBits::Int4 => "q4",
                crate::quant::QBits::Int8 => "q8",
            },
            TensorData::Codebook(c) => match c.bits {
                2 => "cb2",
                3 => "cb3",
                _ => "cb4",
            },
        }
    }

    /// Bytes of payload this tensor adds to a checkpoint.
    pub fn storage_bytes(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => 4 * v.len(),
            TensorData::F16(v) => 2 * v.len(),
            TensorData::Quant(q) => q.storage_bytes(),
            TensorData::Codebook(c) => c.storage_bytes(),
        }
    }

    /// The values as F32 (dequantized or converted when stored otherwise).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::Quant(q) => q.dequantize(),
            TensorData::Codebook(c) => c.dequantize(),
        }
    }
}

/// A framework-free, name-sorted map of tensors: what every stage reads and writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, WeightTensor>,
}

impl Weights {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Inserts (or replaces) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, t: WeightTensor) {
        self.tensors.insert(name.into(), t);
    }
    /// The tensor `name`, or an error naming it.
    pub fn get(&self, name: &str) -> Result<&WeightTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::tensor(name, "missing from checkpoint"))
    }
    /// Mutable access to the tensor `name`.
    pub fn get_mut(&mut self, name: &str) -> Result<&mut WeightTensor> {
        self.tensors
            .get_mut(name)
            .ok_or_else(|| Error::tensor(name, "missing from checkpoint"))
    }
    /// True when `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    /// Removes and returns `name`.
    pub fn remove(&mut self, name: &str) -> Option<WeightTensor> {
        self.tensors.remove(name)
    }
    /// Tensors in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &WeightTensor)> {
        self.tensors.iter()
    }
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    /// Total logical parameters.
    pub fn param_count(&self) -> usize {
        self.tensors.values().map(WeightTensor::numel).sum()
    }
    /// Total payload bytes.
    pub fn storage_bytes(&self) -> usize {
        self.tensors.values().map(WeightTensor::storage_bytes).sum()
    }
    /// The F32 values of `name` (converted/dequantized as needed), checking the shape.
    pub fn f32_with_shape(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(Error::tensor(
                name,
                format!("shape {:?}, expected {shape:?}", t.shape),
            ));
        }
        Ok(t.to_f32())
    }
}

/// Where a checkpoint came from: enough to reproduce it. Deliberately no timestamp, so that the
/// same inputs give byte-identical files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The stage that wrote it (`import`, `baseline`, `int4_native`, …).
    pub stage: String,
    /// sha256 of the parent checkpoint file (or the imported source file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_sha256: Option<String>,
    /// sha256 of the stage configuration that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The squish version that wrote it.
    pub tool: String,
    /// Free-form details (method, seed, source path …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// A reference to the tokenizer file stored beside the checkpoint (written by
/// [`write_tokenizer`] as `tokenizer-<sha8>.bin`; older files name `tokenizer.bin`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerRef {
    /// File name relative to the checkpoint's directory.
    pub file: String,
    /// Its kind (`llama2c`).
    pub kind: String,
    /// sha256 of the tokenizer file.
    pub sha256: String,
}

/// A whole checkpoint: model config, weights and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The model's hyper-parameters (its `arch` tag is the family).
    pub config: ModelConfig,
    /// The tensors.
    pub weights: Weights,
    /// Where it came from.
    pub provenance: Provenance,
    /// Measured numbers (parameters, perplexity …), name → value.
    pub metrics: BTreeMap<String, f64>,
    /// The tokenizer beside the checkpoint, if any.
    pub tokenizer: Option<TokenizerRef>,
}
