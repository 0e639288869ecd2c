//! GPTQ (Frantar et al. 2022), following the reference `fasterquant`:
//!
//! 1. `H = 2·XᵀX / n` from calibration inputs; dead columns (`H_ii = 0`) get `H_ii = 1`, `W_:i = 0`.
//! 2. Optional act-order: columns processed by decreasing `H_ii`. Groups stay contiguous in the
//!    *original* column order (the packed layout requires it), so with act-order every group's
//!    scale is computed up front from the original weights (the reference's `static_groups`).
//! 3. Dampening `λ = percdamp · mean(diag H)`; `U` = upper Cholesky factor of `H⁻¹`.
//! 4. Column by column in lazy blocks of `block_size`: quantize column `i`, error
//!    `e = (w − q) / U_ii`, update the rest of the block with `e · U_i,·`; after the block,
//!    apply the accumulated errors to all later columns at once. Without act-order, a group's
//!    scale is computed from the *updated* weights when its first column is reached.

use serde::{Deserialize, Serialize};
use squish_core::quant::QTensor;
use squish_core::{Error, Result};

use crate::calibration::TensorStats;
use crate::grid::{GroupParams, group_ranges, level, pack, params_for, sym_div, value};
use crate::mse::{MseConfig, best_params};
use crate::spec::{QuantFormat, Quantizer};

/// GPTQ parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptqConfig {
    /// Dampening as a fraction of the mean Hessian diagonal.
    #[serde(default = "default_percdamp")]
    pub percdamp: f64,
    /// Lazy-batch block size (columns).
    #[serde(default = "default_block")]
    pub block_size: usize,
    /// Process columns in order of decreasing Hessian diagonal.
    #[serde(default)]
    pub act_order: bool,
    /// Choose each group's scale by a (Hessian-diagonal-weighted) clipping search instead of min-max.
    #[serde(default)]
    pub clip_search: bool,
}

fn default_percdamp() -> f64 {
    0.01
}
fn default_block() -> usize {
    128
}

impl Default for GptqConfig {
    fn default() -> Self {
        GptqConfig {
            percdamp: default_percdamp(),
            block_size: default_block(),
            act_order: false,
            clip_search: false,
        }
    }
}

/// The GPTQ quantizer (needs calibration statistics).
#[derive(Debug, Clone, Default)]
pub struct Gptq(pub GptqConfig);

/// In-place Cholesky `A = L Lᵀ` of a symmetric `n × n` matrix (row-major); returns false when
/// `A` is not positive definite. Only the lower triangle of the result is meaningful.
pub fn cholesky_lower(a: &mut [f64], n: usize) -> bool {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
        for k in j + 1..n {
            a[j * n + k] = 0.0;
        }
    }
    true
}

/// `U` (upper, row-major `n × n`) with `Uᵀ U = H⁻¹`, or `None` when `H` is not positive definite.
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = h.to_vec();
    if !cholesky_lower(&mut l, n) {
        return None;
    }
    // L⁻¹ by forward substitution (lower triangular).
    let mut li = vec![0.0f64; n * n]; // [n, n]
    for c in 0..n {
        for r in c..n {
            let mut s = if r == c { 1.0 } else { 0.0 };
            for k in c..r {
                s -= l[r * n + k] * li[k * n + c];
            }
            li[r * n + c] = s / l[r * n + r];
        }
    }
    // H⁻¹ = L⁻ᵀ L⁻¹.
    let mut hinv = vec![0.0f64; n * n]; // [n, n]
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i.max(j)..n).map(|k| li[k * n + i] * li[k * n + j]).sum();
            hinv[i * n + j] = s;
            hinv[j * n + i] = s;
        }
    }
    // H⁻¹ = L2 L2ᵀ, U = L2ᵀ.
    if !cholesky_lower(&mut hinv, n) {
        return None;
    }
    let mut u = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = hinv[i * n + j];
        }
    }
    Some(u)
}

/// A weight prepared for GPTQ's error feedback (steps 1–3 of the module docs).
pub(crate) struct Prepared {
    /// The weight transposed, dead columns zeroed: `[cols, rows]`, original column order.
    pub wt: Vec<f64>,
    /// The same in processing order: `[cols, rows]`, column `i` is original column `perm[i]`.
    pub wp: Vec<f64>,
    /// Processing order (identity without act-order).
    pub perm: Vec<usize>,
    /// `diag(H)` in original column order (importance weights).
    pub diag: Vec<f64>,
    /// Upper Cholesky factor of the dampened `H⁻¹` in processing order: `[cols, cols]`.
    pub u: Vec<f64>,
}

/// Steps 1–3: Hessian, dead columns, (act-)order, dampened inverse Cholesky factor.
pub(crate) fn prepare(
    w: &[f32],
    rows: usize,
    cols: usize,
    stats: &TensorStats,
    cfg: &GptqConfig,
) -> Result<Prepared> {
    if !(cfg.percdamp > 0.0 && cfg.percdamp.is_finite()) || cfg.block_size == 0 {
        return Err(Error::invalid(format!(
            "gptq: percdamp {} must be > 0 and block_size {} ≥ 1",
            cfg.percdamp, cfg.block_size
        )));
    }
    let n = cols;
    let mut h = stats.hessian(); // [cols, cols]
    // Work on the transpose so that a column of W is contiguous: wt [cols, rows].
    let mut wt = vec![0.0f64; cols * rows];
    for r in 0..rows {
        for c in 0..cols {
            wt[c * rows + r] = w[r * cols + c] as f64;
        }
    }
    for i in 0..n {
        if h[i * n + i] == 0.0 {
            h[i * n + i] = 1.0;
            wt[i * rows..(i + 1) * rows].fill(0.0);
        }
    }
    let perm: Vec<usize> = if cfg.act_order {
        let mut p: Vec<usize> = (0..n).collect();
        p.sort_by(|&a, &b| h[b * n + b].total_cmp(&h[a * n + a]).then(a.cmp(&b)));
        p
    } else {
        (0..n).collect()
    };
    let diag: Vec<f64> = (0..n).map(|i| h[i * n + i]).collect(); // original order, for clip weights
    // Permuted Hessian and weights.
    let hp: Vec<f64> = (0..n * n)
        .map(|k| h[perm[k / n] * n + perm[k % n]])
        .collect(); // [cols, cols]
    let wp: Vec<f64> = perm
        .iter()
        .flat_map(|&c| wt[c * rows..(c + 1) * rows].iter().copied())
        .collect(); // [cols, rows]
    let mean_diag = diag.iter().sum::<f64>() / n as f64;
    let mut damp = cfg.percdamp * mean_diag;
    let u = loop {
        let mut hd = hp.clone();
        for i in 0..n {
            hd[i * n + i] += damp;
        }
        if let Some(u) = inverse_cholesky_upper(&hd, n) {
            break u;
        }
        damp *= 10.0;
        if damp > 1e6 * mean_diag.max(1e-30) {
            return Err(Error::invalid(
                "gptq: Hessian is not positive definite even after heavy dampening",
            ));
        }
    };
    Ok(Prepared {
        wt,
        wp,
        perm,
        diag,
        u,
    })
}

/// Quantizes column `i` of the current weights `[cols, rows]` into `q [rows]` (see [`feedback`]).
pub(crate) type ColumnQuant<'a> = dyn FnMut(usize, &[f64], &mut [f64]) -> Result<()> + 'a;

/// Step 4, for any grid: column by column (processing order) in lazy blocks of `bs`,
/// `quant(i, wp, q)` writes into `q [rows]` the quantized values of column `i` of the current
/// (error-updated) weights `wp [cols, rows]`; its error `(w − q) / U_ii` is fed forward onto
/// the later columns.
pub(crate) fn feedback(
    wp: &mut [f64], // [cols, rows]
    u: &[f64],      // [cols, cols]
    rows: usize,
    bs: usize,
    quant: &mut ColumnQuant<'_>,
) -> Result<()> {
    let n = wp.len() / rows.max(1);
    let mut q = vec![0.0f64; rows]; // [rows]
    let mut i1 = 0;
    while i1 < n {
        let i2 = (i1 + bs).min(n);
        let mut err = vec![0.0f64; (i2 - i1) * rows]; // [block, rows]
        for i in i1..i2 {
            quant(i, wp, &mut q)?;
            let d = u[i * n + i];
            for r in 0..rows {
                err[(i - i1) * rows + r] = (wp[i * rows + r] - q[r]) / d;
            }
            let rest = &mut wp[(i + 1) * rows..];
            let e = &err[(i - i1) * rows..(i - i1 + 1) * rows];
            for j in i + 1..i2 {
                let uij = u[i * n + j];
                if uij != 0.0 {
                    let col = &mut rest[(j - i - 1) * rows..(j - i) * rows];
                    col.iter_mut().zip(e).for_each(|(w, &e)| *w -= e * uij);
                }
            }
        }
        // Lazy update of every later column.
        for j in i2..n {
            let col = &mut wp[j * rows..(j + 1) * rows];
            for i in i1..i2 {
                let uij = u[i * n + j];
                if uij != 0.0 {
                    let e = &err[(i - i1) * rows..(i - i1 + 1) * rows];
                    col.iter_mut().zip(e).for_each(|(w, &e)| *w -= e * uij);
                }
            }
        }
        i1 = i2;
    }
    Ok(())
}

impl Quantizer for Gptq {
    fn name(&self) -> &'static str {
        "gptq"
    }
    fn needs_stats(&self) -> bool {
        true
    }
    fn quantize(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        format: &QuantFormat,
        stats: Option<&TensorStats>,
    ) -> Result<QTensor> {
        let stats = stats.ok_or_else(|| {
            Error::invalid("gptq needs calibration statistics (XᵀX) for every tensor it quantizes")
        })?;
        let cfg = &self.0;
        let group = format.group_for(cols)?;
        let Prepared {
            wt,
            mut wp,
            perm,
            diag,
            u,
        } = prepare(w, rows, cols, stats, cfg)?;

        let ng = cols.div_ceil(group);
        let mut params = vec![
            GroupParams {
                scale: half::f16::ONE,
                zero: 0
            };
            rows * ng
        ]; // [rows, n_groups]
        let choose = |vals: &[f32], weights: &[f32]| -> Result<GroupParams> {
            if cfg.clip_search {
                best_params(vals, Some(weights), format, &MseConfig::default())
            } else {
                params_for(vals, format, 1.0, sym_div(format))
            }
        };
        let col_params =
            |wsrc: &[f64], range: std::ops::Range<usize>, r: usize| -> Result<GroupParams> {
                let vals: Vec<f32> = range.clone().map(|c| wsrc[c * rows + r] as f32).collect();
                let wts: Vec<f32> = range.map(|c| diag[c] as f32).collect();
                choose(&vals, &wts)
            };
        if cfg.act_order {
            // Static groups from the original weights.
            for g in group_ranges(cols, group) {
                for r in 0..rows {
                    params[r * ng + g.start / group] = col_params(&wt, g.clone(), r)?;
                }
            }
        }
        let mut levels = vec![0i32; rows * cols]; // [rows, cols] original order
        feedback(&mut wp, &u, rows, cfg.block_size, &mut |i, wp, q| {
            let orig = perm[i];
            if !cfg.act_order && orig.is_multiple_of(group) {
                // Group starts: scale from the current (error-updated) weights.
                let g = orig..(orig + group).min(cols);
                for r in 0..rows {
                    params[r * ng + orig / group] = col_params(wp, g.clone(), r)?;
                }
            }
            let gi = orig / group;
            for r in 0..rows {
                let p = &params[r * ng + gi];
                let lv = level(wp[i * rows + r] as f32, p, format);
                levels[r * cols + orig] = lv;
                q[r] = value(lv, p) as f64;
            }
            Ok(())
        })?;
        pack(format, rows, cols, group, &levels, &params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_cholesky_reconstructs_the_inverse() {
        let n = 3;
        let h = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let u = inverse_cholesky_upper(&h, n).unwrap();
        // (Uᵀ U) H = I
        let mut hinv = [0.0f64; 9];
        for i in 0..n {
            for j in 0..n {
                hinv[i * n + j] = (0..n).map(|k| u[k * n + i] * u[k * n + j]).sum();
            }
        }
        for i in 0..n {
            for j in 0..n {
                let v: f64 = (0..n).map(|k| hinv[i * n + k] * h[k * n + j]).sum();
                assert!(
                    (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12,
                    "{i},{j}: {v}"
                );
            }
        }
        assert!(inverse_cholesky_upper(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
