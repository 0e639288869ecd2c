//! Reading and writing checkpoints as safetensors, deterministically and with strict checks:
//! [`write`] turns a checkpoint into bytes, [`read`] parses and validates them; the tensor
//! metadata and the stored-part helpers both sides share live here.

mod read;
mod write;

pub use read::{load, load_bytes};
pub use write::{save, to_bytes};

use half::f16;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest JSON header accepted (bytes). A tiny model's header is a few KB; this bounds the
/// allocation a forged length could ask for.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Suffixes of the stored parts of a quantized tensor.
const QUANT_PARTS: [&str; 4] = [".qweight", ".scales", ".zeros", ".levels"];

/// One logical tensor: its format (`f32`, `f16`, `q4`, `q8`, `cb2`/`cb3`/`cb4`), logical shape,
/// group and symmetry.
/// Version 2 files derive it from the safetensors entries plus `squish.quant`; version 1 files
/// stored it as JSON in `squish.tensors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorMeta {
    format: String,
    shape: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    asym: Option<bool>,
}

/// A stored (physical) tensor: safetensors dtype, shape and little-endian bytes.
pub(super) struct Stored {
    pub(super) dtype: Dtype,
    pub(super) shape: Vec<usize>,
    pub(super) bytes: Vec<u8>,
}

pub(super) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
pub(super) fn f16_bytes(v: &[f16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Rejects NaN and infinite values, naming the tensor and the first bad index.
fn check_finite_f32(name: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::tensor(
            name,
            format!("non-finite value {} at index {i}", v[i]),
        )),
        None => Ok(()),
    }
}
