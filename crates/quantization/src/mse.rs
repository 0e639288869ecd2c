//! Per-group clipping search: shrink each group's range over a grid of clip ratios and keep the
//! ratio whose (optionally activation-weighted) squared error is smallest. With calibration
//! statistics the error of column `c` is weighted by `E[x_c²]`, the per-column second moment of
//! the layer's input — llama.cpp's importance-matrix idea.

use serde::{Deserialize, Serialize};
use squish_core::Result;
use squish_core::quant::{QBits, QTensor};

use crate::calibration::TensorStats;
use crate::grid::{GroupParams, fake_quant, group_ranges, level, pack, params_for, sym_div};
use crate::spec::{QuantFormat, Quantizer};

/// Parameters of the clipping search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MseConfig {
    /// Number of clip ratios tried, evenly spaced in `[min_ratio, 1]`.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Smallest clip ratio tried.
    #[serde(default = "default_min_ratio")]
    pub min_ratio: f32,
    /// Weight each column's error by its calibration second moment (when statistics exist).
    #[serde(default = "default_true")]
    pub weighted: bool,
}

fn default_steps() -> usize {
    41
}
fn default_min_ratio() -> f32 {
    0.6
}
fn default_true() -> bool {
    true
}

impl Default for MseConfig {
    fn default() -> Self {
        MseConfig {
            steps: default_steps(),
            min_ratio: default_min_ratio(),
            weighted: true,
        }
    }
}

/// The clipping-search quantizer.
#[derive(Debug, Clone, Default)]
pub struct MseClip(pub MseConfig);

/// Candidate grids of one group: every clip ratio × (for symmetric INT4) divisors 7 and 8, so
/// the search may use level −8.
pub fn best_params(
    v: &[f32],
    weights: Option<&[f32]>,
    fmt: &QuantFormat,
    cfg: &MseConfig,
) -> Result<GroupParams> {
    let steps = cfg.steps.max(1);
    let divs: &[f32] = if !fmt.asym && fmt.bits == QBits::Int4 {
        &[7.0, 8.0]
    } else {
        &[0.0]
    };
    let mut best: Option<(f64, GroupParams)> = None;
    for i in 0..steps {
        let ratio = if steps == 1 {
            1.0
        } else {
            1.0 - (1.0 - cfg.min_ratio) * i as f32 / (steps - 1) as f32
        };
        for &d in divs {
            let div = if d == 0.0 { sym_div(fmt) } else { d };
            let p = params_for(v, fmt, ratio, div)?;
            let err: f64 = v
                .iter()
                .enumerate()
                .map(|(c, &x)| {
                    let e = (fake_quant(x, &p, fmt) - x) as f64;
                    weights.map_or(1.0, |w| w[c] as f64) * e * e
                })
                .sum();
            if best.as_ref().is_none_or(|(b, _)| err < *b) {
                best = Some((err, p));
            }
        }
    }
    Ok(best.map(|(_, p)| p).expect("at least one candidate"))
}

impl Quantizer for MseClip {
    fn name(&self) -> &'static str {
        "mse"
    }
    fn needs_stats(&self) -> bool {
        false
    }
    fn quantize(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        format: &QuantFormat,
        stats: Option<&TensorStats>,
    ) -> Result<QTensor> {
        let group = format.group_for(cols)?;
        // Column importances [cols]; a small floor keeps never-active columns from being ignored.
        let imp: Option<Vec<f32>> = stats.filter(|_| self.0.weighted).map(|s| {
            let m = s.col_sq_mean();
            let mean = m.iter().sum::<f64>() / m.len().max(1) as f64;
            m.iter().map(|&x| (x + 1e-3 * mean) as f32).collect()
        });
        let mut levels = vec![0i32; rows * cols]; // [rows, cols]
        let mut params = Vec::with_capacity(rows * cols.div_ceil(group)); // [rows, n_groups]
        for (r, row) in w.chunks_exact(cols).enumerate() {
            for g in group_ranges(cols, group) {
                let p = best_params(
                    &row[g.clone()],
                    imp.as_ref().map(|m| &m[g.clone()]),
                    format,
                    &self.0,
                )?;
                for c in g {
                    levels[r * cols + c] = level(row[c], &p, format);
                }
                params.push(p);
            }
        }
        pack(format, rows, cols, group, &levels, &params)
    }
}
