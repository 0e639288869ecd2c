//! What to quantize to ([`QuantFormat`]), with which method ([`Method`]), and the one trait every
//! method implements ([`Quantizer`]).

use serde::{Deserialize, Serialize};
use squish_core::quant::{QBits, QTensor};
use squish_core::{Error, Result};

use crate::calibration::TensorStats;
use crate::gptq::{Gptq, GptqConfig};
use crate::mse::{MseClip, MseConfig};
use crate::rtn::Rtn;

/// A packed target format: code width, group size along the input dimension, symmetric or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantFormat {
    /// Code width (INT4 or INT8).
    pub bits: QBits,
    /// Group size along `cols`; `None` = one group per row (per-channel).
    pub group: Option<usize>,
    /// Asymmetric (scale + U8 zero point) instead of symmetric.
    pub asym: bool,
}

impl QuantFormat {
    /// A format from a bit count (4 or 8; anything else is an error), a group size (`None` =
    /// per-row; `Some(0)` is an error) and the asymmetric flag.
    pub fn new(bits: u32, group: Option<usize>, asym: bool) -> Result<Self> {
        let bits = match bits {
            4 => QBits::Int4,
            8 => QBits::Int8,
            other => return Err(Error::invalid(format!("bits must be 4 or 8, got {other}"))),
        };
        if group == Some(0) {
            return Err(Error::invalid("group size must be ≥ 1 (or per-row)"));
        }
        Ok(QuantFormat { bits, group, asym })
    }

    /// The group size used for a row of `cols` values: an error when it is 0 or exceeds `cols`.
    pub fn group_for(&self, cols: usize) -> Result<usize> {
        match self.group {
            None => Ok(cols),
            Some(g) if g == 0 || g > cols => Err(Error::invalid(format!(
                "group size {g} not in 1..={cols} (the row width)"
            ))),
            Some(g) => Ok(g),
        }
    }

    /// The format a row of `cols` values gets where this is the *default* format of a
    /// whole-checkpoint run: itself, or one group per row when its group is wider than the row
    /// (SsmMoe `dt_proj`, `[d_inner, dt_rank]`; pruned `out_proj` / expert `w2` rows). The one rule
    /// for narrow rows: [`crate::quantize_checkpoint`] and QAT's plan ([`crate::qat::build_plan`])
    /// apply it; a format asked for explicitly (per tensor, [`crate::quantize_tensor`]) must fit.
    pub fn fitted(&self, cols: usize) -> QuantFormat {
        match self.group {
            Some(g) if g > cols => QuantFormat {
                group: None,
                ..*self
            },
            _ => *self,
        }
    }

    /// Smallest and largest integer level: sym INT4 `[−8, 7]`, sym INT8 `[−127, 127]`,
    /// asym `[0, 15]` / `[0, 255]` (the values [`QTensor::from_levels`] accepts).
    pub fn level_range(&self) -> (i32, i32) {
        match (self.bits, self.asym) {
            (QBits::Int4, false) => (-8, 7),
            (QBits::Int8, false) => (-127, 127),
            (QBits::Int4, true) => (0, 15),
            (QBits::Int8, true) => (0, 255),
        }
    }

    /// Number of bits per code.
    pub fn bits_u32(&self) -> u32 {
        self.bits.bits()
    }

    /// A short label like `int4-g32-sym` or `int8-row-asym`.
    pub fn label(&self) -> String {
        let g = self.group.map_or("row".to_string(), |g| format!("g{g}"));
        format!(
            "int{}-{g}-{}",
            self.bits.bits(),
            if self.asym { "asym" } else { "sym" }
        )
    }
}

/// The per-tensor quantization method and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    /// Round-to-nearest with min-max scales.
    Rtn,
    /// Per-group clipping search minimising (optionally activation-weighted) squared error.
    Mse(MseConfig),
    /// GPTQ: Hessian-based error feedback.
    Gptq(GptqConfig),
}

impl Method {
    /// The method's implementation.
    pub fn quantizer(&self) -> Box<dyn Quantizer + '_> {
        match self {
            Method::Rtn => Box::new(Rtn),
            Method::Mse(c) => Box::new(MseClip(c.clone())),
            Method::Gptq(c) => Box::new(Gptq(c.clone())),
        }
    }
    /// The method's name (`rtn`, `mse`, `gptq`).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Rtn => "rtn",
            Method::Mse(_) => "mse",
            Method::Gptq(_) => "gptq",
        }
    }
    /// Parses `rtn`, `mse` or `gptq` with default parameters.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "rtn" => Ok(Method::Rtn),
            "mse" => Ok(Method::Mse(MseConfig::default())),
            "gptq" => Ok(Method::Gptq(GptqConfig::default())),
            other => Err(Error::invalid(format!(
                "unknown quantization method `{other}` (rtn, mse, gptq)"
            ))),
        }
    }
}

/// Everything [`crate::quantize_tensor`] needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantSpec {
    /// Target format.
    pub format: QuantFormat,
    /// Method choosing the codes.
    pub method: Method,
}

/// One quantization method (one impl per method). Implementations choose integer levels and
/// F16 scales for a row-major `w [rows, cols]` and pack them with [`QTensor::from_levels`].
pub trait Quantizer {
    /// The method's name.
    fn name(&self) -> &'static str;
    /// True when the method cannot run without calibration statistics.
    fn needs_stats(&self) -> bool;
    /// Quantizes `w [rows, cols]` (already checked: finite, right length, valid group).
    fn quantize(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        format: &QuantFormat,
        stats: Option<&TensorStats>,
    ) -> Result<QTensor>;
}

/// Checks `w [rows, cols]`: length, non-empty, finite.
pub fn check_weights(w: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::invalid(format!(
            "cannot quantize an empty [{rows}, {cols}] tensor"
        )));
    }
    if w.len() != rows * cols {
        return Err(Error::invalid(format!(
            "{} values for a [{rows}, {cols}] tensor",
            w.len()
        )));
    }
    if let Some(i) = w.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(format!(
            "non-finite value {} at [{}, {}]",
            w[i],
            i / cols,
            i % cols
        )));
    }
    Ok(())
}
