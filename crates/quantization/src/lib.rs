#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! - [`stage`]: the stage as the pipeline runs it — [`QuantSettings`] (the
//!   `[stages.<name>.quant]` table), [`run`], [`StageOutput`], [`QuantEvent`], [`calibrate`].
//! - [`spec`]: [`QuantFormat`] (INT4/INT8, group size or per-row, sym/asym), [`Method`], and the
//!   [`Quantizer`] trait (one impl per method: [`rtn::Rtn`], [`mse::MseClip`], [`gptq::Gptq`]).
//! - [`grid`]: F16 scales (rounded *before* codes are chosen), zero points, levels, packing into
//!   `squish_core::quant::QTensor` (any row width; the last group may be short).
//! - [`codebook`]: learned per-tensor codebooks (weighted Lloyd-Max levels; nearest level or GPTQ
//!   error feedback onto them), `squish_core::codebook::CbTensor`.
//! - [`calibration`]: per-linear input statistics (`XᵀX`, `Σ|x|`) from `forward_captured`.
//! - [`awq`]: activation-aware per-channel scaling, folded only where exact.
//! - [`pipeline`]: [`quantize_checkpoint`]; [`report`]: [`QuantReport`].
//! - [`qat`]: [`qat_checkpoint`] — fake-quant fine-tuning with distillation ([`qat_net`]: the
//!   straight-through network; [`qat_codebook`]: trained levels and scales of codebook tensors;
//!   [`qat_flips`]: their oscillation, measured; [`qat_plan`]: what each tensor becomes;
//!   [`qat_export`]: the packed export on the same grid).

#![deny(missing_docs)]

pub mod awq;
pub mod calibration;
pub mod codebook;
pub mod gptq;
pub mod grid;
pub mod mse;
pub mod pipeline;
pub mod qat;
pub mod qat_codebook;
pub mod qat_export;
pub mod qat_flips;
pub mod qat_net;
pub mod qat_plan;
pub mod qat_share;
pub mod report;
pub mod rtn;
pub mod settings;
pub mod spec;
pub mod stage;

pub use awq::AwqConfig;
pub use calibration::{Calibration, TensorStats, calibration_windows};
pub use codebook::{CodebookMode, CodebookSpec, quantize_codebook, uniform_levels};
pub use gptq::GptqConfig;
pub use mse::MseConfig;
pub use pipeline::{QuantConfig, SmallFormat, quantize_checkpoint};
pub use qat::{QatConfig, QatData, QatInit, QatScales, QatSummary, qat_checkpoint};
pub use report::QuantReport;
pub use spec::{Method, QuantFormat, QuantSpec, Quantizer};
pub use stage::{
    QatSettings, QuantEvent, QuantMethod, QuantSettings, StageInput, StageOutput, calibrate, run,
};

use squish_core::quant::QTensor;
use squish_core::{Error, Result};

/// Quantizes one row-major weight `w [rows, cols]` with `spec`. `stats` (the layer's input
/// statistics) is required by GPTQ and optional for MSE (importance weighting).
/// Errors: wrong length, non-finite values, group 0 or wider than `cols`, missing or mismatched
/// statistics.
pub fn quantize_tensor(
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: &QuantSpec,
    stats: Option<&TensorStats>,
) -> Result<QTensor> {
    spec::check_weights(w, rows, cols)?;
    spec.format.group_for(cols)?;
    if let Some(s) = stats
        && s.cols != cols
    {
        return Err(Error::invalid(format!(
            "calibration statistics have {} columns, the weight has {cols}",
            s.cols
        )));
    }
    let q = spec.method.quantizer();
    if q.needs_stats() && stats.is_none() {
        return Err(Error::invalid(format!(
            "method {} needs calibration statistics",
            q.name()
        )));
    }
    q.quantize(w, rows, cols, &spec.format, stats)
}
