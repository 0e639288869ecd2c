//! The stage's report: per-tensor choices, predicted vs measured, the proxy's rank correlation
//! and the Pareto frontier.

use serde::{Deserialize, Serialize};

use crate::config::{Budget, Objective};

/// One tensor of the chosen mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorChoice {
    /// Tensor name.
    pub name: String,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Chosen candidate (`f16`, `int4-g32-asym`, … or `f32` when not quantizable).
    pub format: String,
    /// Method that chose the codes.
    pub method: String,
    /// Payload bytes.
    pub bytes: u64,
    /// Measured mean KL per token with only this tensor changed (0 when unchanged).
    pub kl: f64,
    /// Measured Δnats/token with only this tensor changed (0 when unchanged).
    pub dnats: f64,
}

/// One (tensor, candidate) measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    /// Tensor name.
    pub tensor: String,
    /// Candidate label.
    pub candidate: String,
    /// Method that chose the codes.
    pub method: String,
    /// Payload bytes.
    pub bytes: u64,
    /// Mean KL(F32 ‖ candidate) per token.
    pub kl: f64,
    /// Δ next-token loss (nats/token).
    pub dnats: f64,
    /// HAWQ-style proxy (mean squared layer-output error per token).
    pub proxy: f64,
}

/// Which kind of point of the frontier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointKind {
    /// A DP solution at some byte budget.
    Mixed,
    /// Every quantizable tensor in one format (small tensors F32).
    Uniform,
    /// The mix returned by the stage.
    Chosen,
}

/// A point of the bytes-vs-perplexity plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrontierPoint {
    /// Short label.
    pub label: String,
    /// Kind of point.
    pub kind: PointKind,
    /// Real file bytes (`checkpoint::to_bytes`).
    pub file_bytes: u64,
    /// `file_bytes × 8 / parameters`.
    pub bits_per_param: f64,
    /// Predicted loss increase (Σ per-tensor objective, nats/token).
    pub predicted_dnats: f64,
    /// Predicted perplexity (F32 measured PPL × exp(predicted Δnats)).
    pub predicted_ppl: Option<f64>,
    /// Predicted perplexity after the fitted correction (× exp(α·Δ) instead).
    pub corrected_ppl: Option<f64>,
    /// Measured perplexity (native runtime, llama-cpp protocol).
    pub measured_ppl: Option<f64>,
    /// Measured Δnats/token on the calibration windows with the whole mix applied.
    pub measured_calib_dnats: Option<f64>,
}

/// Rank correlation of the cheap proxy with the measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyReport {
    /// What the proxy is.
    pub proxy: String,
    /// (tensor, candidate) pairs compared (F32 excluded).
    pub pairs: usize,
    /// Spearman ρ of proxy vs measured KL.
    pub spearman_kl: f64,
    /// Spearman ρ of proxy vs measured Δnats.
    pub spearman_dnats: f64,
    /// Spearman ρ of measured KL vs measured Δnats.
    pub spearman_kl_dnats: f64,
}

/// One attempt of fitting the budget (header bytes are only known after serializing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolveAttempt {
    /// Budget given to the DP: bytes of the decided tensors, payload plus their own header entries.
    pub payload_budget: u64,
    /// Those bytes in the solution.
    pub payload_bytes: u64,
    /// Real file bytes of the solution.
    pub file_bytes: u64,
    /// Predicted Δnats of the solution.
    pub predicted_dnats: f64,
    /// Measured PPL when measured during the solve (dual problem).
    pub measured_ppl: Option<f64>,
}

/// Everything the stage measured and decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedReport {
    /// The constraint.
    pub budget: Budget,
    /// The byte limit it implies (`None` for the ΔPPL target).
    pub byte_limit: Option<u64>,
    /// What the DP minimised.
    pub objective: Objective,
    /// Parameters of the input (denominator of bits/param).
    pub parameters: usize,
    /// sha256 of the input checkpoint's bytes.
    pub parent_sha256: String,
    /// Calibration windows / scored positions used for the sensitivities.
    pub calib_windows: usize,
    /// Scored calibration positions.
    pub calib_positions: usize,
    /// F32 loss at the scored calibration positions (nats/token).
    pub calib_base_nats: f64,
    /// F32 perplexity on the validation tokens (when given).
    pub base_ppl: Option<f64>,
    /// Sensitivity cache file, if any.
    pub cache_path: Option<String>,
    /// True when the sensitivities came from the cache.
    pub cache_hit: bool,
    /// Cache key.
    pub cache_key: String,
    /// Seconds spent measuring sensitivities (0 on a cache hit).
    pub sensitivity_seconds: f64,
    /// DP byte unit.
    pub dp_unit: u64,
    /// DP table width.
    pub dp_states: usize,
    /// True when the DP is exactly optimal (unit divides every cost).
    pub dp_exact: bool,
    /// Real file bytes of the result.
    pub file_bytes: u64,
    /// Its bits/param.
    pub bits_per_param: f64,
    /// Payload (tensor) bytes of the result.
    pub payload_bytes: u64,
    /// Predicted Δnats (Σ of the per-tensor objective).
    pub predicted_dnats: f64,
    /// Predicted PPL (`base_ppl × exp(predicted_dnats)`).
    pub predicted_ppl: Option<f64>,
    /// Measured PPL of the result.
    pub measured_ppl: Option<f64>,
    /// Measured ΔPPL in percent.
    pub measured_dppl_pct: Option<f64>,
    /// (predicted − measured) / measured PPL, percent.
    pub prediction_error_pct: Option<f64>,
    /// Measured Δnats on the calibration windows with the whole mix (additivity on calibration).
    pub measured_calib_dnats: f64,
    /// Fitted additivity factor α (least squares of measured vs predicted ln PPL ratio over
    /// the measured points; 1 = additive).
    pub correction: Option<f64>,
    /// Budget fitting attempts.
    pub attempts: Vec<SolveAttempt>,
    /// Per-tensor choices.
    pub tensors: Vec<TensorChoice>,
    /// Proxy quality.
    pub proxy: ProxyReport,
    /// Frontier, uniform and chosen points, sorted by bytes.
    pub frontier: Vec<FrontierPoint>,
    /// Every measurement.
    pub sensitivity: Vec<SensitivityRow>,
}

impl MixedReport {
    /// Count of tensors per chosen format, e.g. `[("int4-g32-asym", 20), ("f16", 1)]`.
    pub fn format_counts(&self) -> Vec<(String, usize)> {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for t in &self.tensors {
            *m.entry(t.format.clone()).or_default() += 1;
        }
        m.into_iter().collect()
    }
}

fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation (ties get average ranks); 0 when undefined.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.len() < 2 {
        return 0.0;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_known_values() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }
}
