//! Per-group clipping search: shrink each group's range over a grid of clip ratios and keep the
//! ratio whose (optionally activation-weighted) squared error is smallest. With calibration
//! statistics the error of column `c` is weighted by `E[x_c²]`, the per-column second moment of
//! the layer's input — llama.cpp's importance-matrix idea.

use serde::{Deserialize, Serialize};
use squish_core::quant::{QBits, QTensor};
use squish_core::{Error, Result};

use crate::calibration::TensorStats;
use crate::grid::{GroupParams, group_range, group_ranges, level, pack, params_for_range, sym_div};
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
    if let Some(w) = weights
        && w.len() != v.len()
    {
        return Err(Error::invalid(format!(
            "{} error weights for a group of {} values",
            w.len(),
            v.len()
        )));
    }
    let steps = cfg.steps.max(1);
    let range = group_range(v);
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
            let p = params_for_range(range, fmt, ratio, div)?;
            let err = sq_error(v, weights, &p, fmt);
            if best.as_ref().is_none_or(|(b, _)| err < *b) {
                best = Some((err, p));
            }
        }
    }
    Ok(best.map(|(_, p)| p).expect("at least one candidate"))
}

/// `Σ_c w_c (fake_quant(v_c) − v_c)²` of one group on the grid `p` (`w_c = 1` without
/// weights): the search's objective, on the widest SIMD path the CPU has. Exactly
/// [`crate::grid::fake_quant`] per element; the sum runs in 8 f64 lanes reduced in a fixed
/// order, so every path gives the same bits. `weights`, when given, has one entry per value (checked by
/// [`best_params`]).
fn sq_error(v: &[f32], weights: Option<&[f32]>, p: &GroupParams, fmt: &QuantFormat) -> f64 {
    let (lo, hi) = fmt.level_range();
    let grid = Grid {
        s: p.s(),
        zero: p.zero as i32,
        lo,
        hi,
    };
    debug_assert!(weights.is_none_or(|w| w.len() == v.len()));
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { sq_error_avx512(v, weights, grid) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { sq_error_avx2(v, weights, grid) };
        }
    }
    sq_error_lanes(v, weights, grid)
}

/// One group's grid with its scale widened to f32 once.
#[derive(Clone, Copy)]
struct Grid {
    s: f32,
    zero: i32,
    lo: i32,
    hi: i32,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sq_error_avx2(v: &[f32], weights: Option<&[f32]>, g: Grid) -> f64 {
    sq_error_lanes(v, weights, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn sq_error_avx512(v: &[f32], weights: Option<&[f32]>, g: Grid) -> f64 {
    sq_error_lanes(v, weights, g)
}

#[inline(always)]
fn sq_error_lanes(v: &[f32], weights: Option<&[f32]>, g: Grid) -> f64 {
    const L: usize = 8;
    let err = |x: f32| {
        let q = ((x / g.s).round() as i32 + g.zero).clamp(g.lo, g.hi);
        let e = (g.s * (q - g.zero) as f32 - x) as f64;
        e * e
    };
    let mut acc = [0.0f64; L];
    let mut vs = v.chunks_exact(L);
    match weights {
        None => {
            for c in &mut vs {
                for k in 0..L {
                    acc[k] += err(c[k]);
                }
            }
            for (k, &x) in vs.remainder().iter().enumerate() {
                acc[k] += err(x);
            }
        }
        Some(w) => {
            let mut ws = w.chunks_exact(L);
            for (c, wc) in (&mut vs).zip(&mut ws) {
                for k in 0..L {
                    acc[k] += wc[k] as f64 * err(c[k]);
                }
            }
            for (k, (&x, &wk)) in vs.remainder().iter().zip(ws.remainder()).enumerate() {
                acc[k] += wk as f64 * err(x);
            }
        }
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{fake_quant, params_for};

    #[test]
    fn sq_error_is_the_fake_quant_error_on_every_format_and_width() {
        for (bits, asym) in [(4, false), (4, true), (8, false), (8, true)] {
            let fmt = QuantFormat::new(bits, Some(32), asym).unwrap();
            for n in [1usize, 7, 8, 17, 64] {
                let v: Vec<f32> = (0..n)
                    .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013)
                    .collect();
                let w: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32).collect();
                let p = params_for(&v, &fmt, 0.8, sym_div(&fmt)).unwrap();
                for weights in [None, Some(&w[..])] {
                    let want: f64 = v
                        .iter()
                        .enumerate()
                        .map(|(c, &x)| {
                            let e = (fake_quant(x, &p, &fmt) - x) as f64;
                            weights.map_or(1.0, |w| w[c] as f64) * e * e
                        })
                        .sum();
                    let got = sq_error(&v, weights, &p, &fmt);
                    assert!(
                        (got - want).abs() <= 1e-12 * want.max(1e-30),
                        "bits {bits} asym {asym} n {n}: {got} vs {want}"
                    );
                    assert_eq!(got, sq_error_lanes(&v, weights, grid_of(&p, &fmt)));
                }
            }
        }
    }

    fn grid_of(p: &GroupParams, fmt: &QuantFormat) -> Grid {
        let (lo, hi) = fmt.level_range();
        Grid {
            s: p.s(),
            zero: p.zero as i32,
            lo,
            hi,
        }
    }
}
