//! The quantization report: per-tensor errors, the bytes, and the results-table row.

use serde::{Deserialize, Serialize};

use crate::awq::AwqSite;
use crate::calibration::TensorStats;

/// One quantized tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorReport {
    /// Weight name.
    pub name: String,
    /// `[rows, cols]`.
    pub shape: Vec<usize>,
    /// `q4` / `q8` / `cb2` / `cb3` / `cb4`.
    pub format: String,
    /// Group size used.
    pub group: usize,
    /// Stored bytes (codes + scales + zeros).
    pub bytes: usize,
    /// `‖W − Q‖_F / ‖W‖_F` (with AWQ: of the scaled weight `W·diag(s)`).
    pub rel_weight_error: f64,
    /// `‖X(W − Q)ᵀ‖_F / ‖XWᵀ‖_F` on the calibration inputs, when calibration ran.
    pub rel_output_error: Option<f64>,
}

impl TensorReport {
    /// The row of packed tensor `name` `[rows, cols]` stored as `format` (`q4`, `cb3` …) with
    /// `group` and `bytes`: its errors of `deq` against `orig` (output error on `stats`' inputs
    /// when given).
    #[allow(clippy::too_many_arguments)]
    pub fn measure(
        name: &str,
        rows: usize,
        cols: usize,
        orig: &[f32],
        deq: &[f32],
        format: &str,
        group: usize,
        bytes: usize,
        stats: Option<&TensorStats>,
    ) -> Self {
        let num: f64 = orig
            .iter()
            .zip(deq)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = orig.iter().map(|a| (*a as f64).powi(2)).sum();
        TensorReport {
            name: name.to_string(),
            shape: vec![rows, cols],
            format: format.to_string(),
            group,
            bytes,
            rel_weight_error: if den > 0.0 { (num / den).sqrt() } else { 0.0 },
            rel_output_error: stats.map(|s| s.relative_output_error(orig, deq, rows)),
        }
    }
}

/// A tensor left unquantized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptTensor {
    /// Name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// `f32` / `f16`.
    pub format: String,
    /// Stored bytes.
    pub bytes: usize,
}

/// The row of the results table (filled by the caller once the file is written and evaluated).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// Size of the written checkpoint file.
    pub file_bytes: Option<u64>,
    /// `file_bytes · 8 / parameters of the F32 model`.
    pub bits_per_param: Option<f64>,
    /// Perplexity of the quantized model.
    pub ppl: Option<f64>,
    /// Perplexity of the F32 parent.
    pub f32_ppl: Option<f64>,
    /// `(ppl − f32_ppl) / f32_ppl` in percent.
    pub delta_ppl_pct: Option<f64>,
}

/// Everything a quantization run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantReport {
    /// Method name (`rtn`, `mse`, `gptq`, `qat`), with `+awq` when AWQ scaling ran.
    pub method: String,
    /// Bits per code.
    pub bits: u32,
    /// Group size (`None` = per-row).
    pub group: Option<usize>,
    /// Asymmetric format.
    pub asym: bool,
    /// Parameters of the F32 model.
    pub parameters: usize,
    /// Sum of tensor payload bytes (without the file header).
    pub tensor_bytes: usize,
    /// Bytes of the tensors kept in F32/F16 (norms, SSM small tensors, skipped tensors).
    pub kept_bytes: usize,
    /// `kept_bytes / tensor_bytes`.
    pub kept_share: f64,
    /// Calibration windows and tokens (0 when none).
    pub calib_windows: usize,
    /// See `calib_windows`.
    pub calib_tokens: usize,
    /// Quantized tensors.
    pub tensors: Vec<TensorReport>,
    /// Tensors left unquantized.
    pub kept: Vec<KeptTensor>,
    /// AWQ sites (empty without AWQ).
    pub awq: Vec<AwqSite>,
    /// The results-table row.
    pub row: TableRow,
    /// What the QAT fine-tuning did (QAT runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qat: Option<crate::qat::QatSummary>,
}

impl QuantReport {
    /// Fills the table row from the written file size and (optionally) the measured perplexities.
    pub fn finish_row(&mut self, file_bytes: u64, ppl: Option<f64>, f32_ppl: Option<f64>) {
        self.row.file_bytes = Some(file_bytes);
        self.row.bits_per_param = Some(file_bytes as f64 * 8.0 / self.parameters.max(1) as f64);
        self.row.ppl = ppl;
        self.row.f32_ppl = f32_ppl;
        self.row.delta_ppl_pct = match (ppl, f32_ppl) {
            (Some(p), Some(b)) if b > 0.0 => Some(100.0 * (p - b) / b),
            _ => None,
        };
    }

    /// Mean relative output error over the quantized tensors that have one.
    pub fn mean_output_error(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .tensors
            .iter()
            .filter_map(|t| t.rel_output_error)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// The markdown table row: `| method | bits | group | sym/asym | bytes | bits/param | PPL | ΔPPL |`.
    pub fn markdown_row(&self) -> String {
        let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |x| format!("{x:.d$}"));
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            self.method,
            self.bits,
            self.group.map_or("row".to_string(), |g| g.to_string()),
            if self.asym { "asym" } else { "sym" },
            self.row
                .file_bytes
                .map_or("-".to_string(), |b| b.to_string()),
            f(self.row.bits_per_param, 3),
            f(self.row.ppl, 4),
            self.row
                .delta_ppl_pct
                .map_or("-".to_string(), |d| format!("{d:+.2} %")),
        )
    }
}
