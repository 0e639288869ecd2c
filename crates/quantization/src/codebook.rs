//! Learned codebooks: one table of `2^bits` levels per tensor (2, 3 or 4 bits), group scales
//! stored as F16 or as log8 codes ([`CbScales`]), as `squish_core::codebook::CbTensor`.
//!
//! 1. Each (row, group) gets the scale `s = absmax` (rounded up to F16, or with `Log8` up to the
//!    grid `B · log8_scale(c)`), so `u = w / s ∈ [−1, 1]`.
//! 2. The levels are a weighted Lloyd-Max (1-D k-means) fit of all the tensor's `u`, each weighted
//!    by `s² · E[x_c²]` — its squared weight-space error counted as the layer output does, with
//!    `E[x_c²]` the calibration inputs' second moment of its input channel (uniform without
//!    calibration). Initialised at the weighted quantiles, iterated to a fixed point.
//! 3. Codes: the nearest level (`Rtn`), or GPTQ's error feedback onto the nearest level with the
//!    scales and levels fixed (`Gptq`, the shared loop of [`crate::gptq::feedback`]).
//!
//! With `Log8` the levels leave step 2 as `F16(B · L)` and the scales as the bare grid values
//! (`squish_core::codebook::scales::to_log8`), so step 3 codes against exactly what is stored.

use half::f16;
use serde::{Deserialize, Serialize};
use squish_core::codebook::scales::to_log8;
use squish_core::codebook::{CbScales, CbTensor, check_bits, nearest_level};
use squish_core::{Error, Result};

use crate::calibration::TensorStats;
use crate::gptq::{GptqConfig, Prepared, feedback, prepare};
use crate::grid::f16_at_least;

/// Where the levels come from: `none` = the uniform integer grid of `squish_core::quant`
/// (INT4/INT8), `tensor` = a learned codebook per tensor, `uniform` = the codebook format holding
/// the symmetric integer grid (the baseline that isolates what learning the levels buys, and the
/// only uniform 2- and 3-bit format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodebookMode {
    /// The uniform grid of `squish_core::quant` (today's formats; the default).
    #[default]
    None,
    /// One learned table of `2^bits` levels per tensor.
    Tensor,
    /// The codebook format with the fixed levels [`uniform_levels`].
    Uniform,
}

/// Bits and level choice of a codebook quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodebookSpec {
    /// 2, 3 or 4.
    pub bits: u32,
    /// Learned levels (Lloyd-Max) instead of [`uniform_levels`].
    pub learned: bool,
    /// How the group scales are stored (default `log8`: one byte each, F16 levels).
    #[serde(default)]
    pub scales: CbScales,
}

/// The symmetric integer grid as levels of a group normalized to `[−1, 1]`:
/// `(k − 2^(b−1)) / (2^(b−1) − 1)`, `k = 0 … 2^b − 1` — exactly INT4 sym's `s·(n − 8)` with
/// `s = absmax / 7` at 4 bits, and INT3 / INT2 alike.
pub fn uniform_levels(bits: u32) -> Vec<f32> {
    let half = (1u32 << (bits - 1)) as f32;
    (0..1u32 << bits)
        .map(|k| (k as f32 - half) / (half - 1.0))
        .collect()
}

impl CodebookMode {
    /// Parses `none` or `tensor`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(CodebookMode::None),
            "tensor" => Ok(CodebookMode::Tensor),
            "uniform" => Ok(CodebookMode::Uniform),
            other => Err(Error::invalid(format!(
                "unknown codebook `{other}` (none, tensor, uniform)"
            ))),
        }
    }
}

/// Lloyd-Max iterations at most (it usually reaches its fixed point far earlier).
pub const LLOYD_ITERS: usize = 100;

/// Weighted 1-D k-means of `vals` (weights `wts ≥ 0`, same length) into `k` sorted levels.
/// Empty clusters keep their previous level. Errors on empty input or no positive weight.
pub fn fit_levels(vals: &[f32], wts: &[f32], k: usize, iters: usize) -> Result<Vec<f32>> {
    if vals.is_empty() || vals.len() != wts.len() || k == 0 {
        return Err(Error::invalid(format!(
            "fit_levels: {} values, {} weights, {k} levels",
            vals.len(),
            wts.len()
        )));
    }
    let mut pts: Vec<(f32, f64)> = vals
        .iter()
        .zip(wts)
        .map(|(&v, &w)| (v, w.max(0.0) as f64))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = pts.iter().map(|p| p.1).sum();
    if total <= 0.0 || !total.is_finite() {
        return Err(Error::invalid("fit_levels: the weights sum to zero"));
    }
    // Weighted quantiles (k + ½) / K.
    let mut levels = Vec::with_capacity(k);
    let (mut cum, mut i) = (0.0f64, 0usize);
    for q in 0..k {
        let target = (q as f64 + 0.5) / k as f64 * total;
        while i + 1 < pts.len() && cum + pts[i].1 < target {
            cum += pts[i].1;
            i += 1;
        }
        levels.push(pts[i].0);
    }
    for _ in 0..iters {
        let (mut sw, mut swx) = (vec![0.0f64; k], vec![0.0f64; k]);
        let mut c = 0;
        for &(v, w) in &pts {
            // Sorted points and levels: the nearest level only moves up.
            while c + 1 < k && (v - levels[c + 1]).abs() < (v - levels[c]).abs() {
                c += 1;
            }
            sw[c] += w;
            swx[c] += w * v as f64;
        }
        let mut next = levels.clone();
        for c in 0..k {
            if sw[c] > 0.0 {
                next[c] = (swx[c] / sw[c]) as f32;
            }
        }
        next.sort_by(f32::total_cmp);
        if next == levels {
            break;
        }
        levels = next;
    }
    Ok(levels)
}

/// Quantizes `w [rows, cols]` to a `spec.bits`-bit codebook with groups of `group` along `cols`
/// (`group ≤ cols`). `stats` weights the level fit by the inputs' second moments (uniform when
/// `None`); `gptq` (needs `stats`) chooses the codes by GPTQ error feedback instead of nearest.
pub fn quantize_codebook(
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: CodebookSpec,
    group: usize,
    stats: Option<&TensorStats>,
    gptq: Option<&GptqConfig>,
) -> Result<CbTensor> {
    let bits = spec.bits;
    check_bits(bits)?;
    crate::spec::check_weights(w, rows, cols)?;
    if group == 0 || group > cols {
        return Err(Error::invalid(format!(
            "group size {group} not in 1..={cols} (the row width)"
        )));
    }
    if let Some(s) = stats
        && s.cols != cols
    {
        return Err(Error::invalid(format!(
            "calibration statistics have {} columns, the weight has {cols}",
            s.cols
        )));
    }
    let col_w: Vec<f64> = match stats {
        Some(s) => s.col_sq_mean(),
        None => vec![1.0; cols],
    };
    let CodebookFit { scales, levels, .. } =
        fit_scales_and_levels(w, rows, cols, spec, group, &col_w)?;
    let ng = cols.div_ceil(group);
    let sf: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect(); // [rows, n_groups]
    let u = w
        .iter()
        .enumerate()
        .map(|(i, &x)| x / sf[(i / cols) * ng + (i % cols) / group]);
    let codes = match gptq {
        None => u.map(|x| nearest_level(&levels, x)).collect(),
        Some(cfg) => {
            let stats = stats.ok_or_else(|| {
                Error::invalid("gptq needs calibration statistics for every tensor it quantizes")
            })?;
            gptq_codes(w, rows, cols, group, &sf, &levels, stats, cfg)?
        }
    };
    CbTensor::from_codes(bits, rows, cols, group, &codes, scales, levels)?
        .into_scale_format(spec.scales)
}

/// The stored scales and levels of a fit ([`fit_scales_and_levels`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CodebookFit {
    /// `[rows, n_groups]`: absmax F16 scales, or log8 grid values.
    pub scales: Vec<f16>,
    /// `[2^bits]`, sorted; with log8 `F16(B · L)`.
    pub levels: Vec<f32>,
    /// The power of two folded into log8 levels (`scale · B` is the group's scale); 1 for F16.
    pub base: f32,
}

/// The group scales and levels of `w [rows, cols]` (steps 1 and 2 of the module docs): absmax
/// scales `[rows, n_groups]`, and levels learned by the weighted Lloyd-Max fit (or
/// [`uniform_levels`] when `spec.learned` is false), as stored in `spec.scales`'s format (with
/// `Log8` the scales are grid values and the levels carry the tensor's magnitude, so
/// `scale · level` is the weight either way). `col_w [cols]` weighs each input column
/// (the calibration inputs' second moments; all equal without calibration). Inputs are checked
/// by the caller ([`quantize_codebook`]) or come from a checked plan (QAT's initial codebook).
pub fn fit_scales_and_levels(
    w: &[f32],
    rows: usize,
    cols: usize,
    spec: CodebookSpec,
    group: usize,
    col_w: &[f64],
) -> Result<CodebookFit> {
    if col_w.len() != cols || w.len() != rows * cols || group == 0 {
        return Err(Error::invalid(format!(
            "codebook fit: {} values, {} column weights, group {group} for [{rows}, {cols}]",
            w.len(),
            col_w.len()
        )));
    }
    let ng = cols.div_ceil(group);
    let mut scales = Vec::with_capacity(rows * ng); // [rows, n_groups]
    for row in w.chunks_exact(cols) {
        for g in row.chunks(group) {
            scales.push(f16_at_least(g.iter().fold(0f32, |m, x| m.max(x.abs())))?);
        }
    }
    // With log8, `sf` are the grid scales times the tensor's base B (each still ≥ its absmax),
    // and the levels fitted in those units are folded into `F16(B · L)` at the end.
    let sf: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect(); // [rows, n_groups]
    let (scales, sf, base) = match spec.scales {
        CbScales::F16 => (scales, sf, None),
        CbScales::Log8 => {
            let (grid, _, base) = to_log8(&sf, &[], true);
            let sf = grid.iter().map(|g| g.to_f32() * base).collect();
            (grid, sf, Some(base))
        }
    };
    let finish = |levels: Vec<f32>| CodebookFit {
        scales,
        levels: match base {
            Some(b) => levels
                .iter()
                .map(|&l| f16::from_f32(b * l).to_f32())
                .collect(),
            None => levels,
        },
        base: base.unwrap_or(1.0),
    };
    if !spec.learned {
        return Ok(finish(uniform_levels(spec.bits)));
    }
    // A column no calibration input reached still counts a little, so its weights get levels.
    let floor = col_w.iter().cloned().fold(0.0f64, f64::max) * 1e-6 + f64::MIN_POSITIVE;
    let (mut u, mut uw) = (Vec::with_capacity(w.len()), Vec::with_capacity(w.len()));
    for (i, &x) in w.iter().enumerate() {
        let (r, c) = (i / cols, i % cols);
        let s = sf[r * ng + c / group];
        u.push(x / s);
        uw.push((col_w[c].max(floor) * (s as f64) * (s as f64)) as f32);
    }
    // Scale the weights to a sane range for f32 (only their ratios matter).
    let wmax = uw.iter().cloned().fold(0f32, f32::max);
    if wmax > 0.0 {
        uw.iter_mut().for_each(|x| *x /= wmax);
    }
    let levels = fit_levels(&u, &uw, 1 << spec.bits, LLOYD_ITERS)?;
    Ok(finish(levels))
}

/// GPTQ onto the codebook: column by column, each weight takes the level nearest to its
/// error-updated value; the error feeds forward (scales and levels fixed).
#[allow(clippy::too_many_arguments)]
fn gptq_codes(
    w: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    sf: &[f32], // [rows, n_groups]
    levels: &[f32],
    stats: &TensorStats,
    cfg: &GptqConfig,
) -> Result<Vec<u8>> {
    let ng = cols.div_ceil(group);
    let Prepared {
        mut wp, perm, u, ..
    } = prepare(w, rows, cols, stats, cfg)?;
    let mut codes = vec![0u8; rows * cols]; // [rows, cols]
    feedback(&mut wp, &u, rows, cfg.block_size, &mut |i, wp, q| {
        let c = perm[i];
        for r in 0..rows {
            let s = sf[r * ng + c / group];
            let k = nearest_level(levels, wp[i * rows + r] as f32 / s);
            codes[r * cols + c] = k;
            q[r] = (s * levels[k as usize]) as f64;
        }
        Ok(())
    })?;
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(bits: u32) -> CodebookSpec {
        CodebookSpec {
            bits,
            learned: true,
            scales: CbScales::Log8,
        }
    }

    #[test]
    fn log8_scales_halve_the_scale_bytes_at_a_small_error_cost() {
        let (rows, cols, group) = (16, 172, 64);
        let w: Vec<f32> = noise(rows * cols, 5)
            .iter()
            .enumerate()
            .map(|(i, x)| x * (1.0 + (i / cols) as f32)) // rows of different magnitude
            .collect();
        for bits in 2..=4u32 {
            let f16 = CodebookSpec {
                scales: CbScales::F16,
                ..learned(bits)
            };
            let a = quantize_codebook(&w, rows, cols, f16, group, None, None).unwrap();
            let b = quantize_codebook(&w, rows, cols, learned(bits), group, None, None).unwrap();
            assert_eq!(b.scale_format, CbScales::Log8);
            let saved = rows * cols.div_ceil(group) + 2 * (1 << bits);
            assert_eq!(a.storage_bytes() - b.storage_bytes(), saved);
            let err = |d: Vec<f32>| -> f64 {
                d.iter()
                    .zip(&w)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum()
            };
            let (ea, eb) = (err(a.dequantize()), err(b.dequantize()));
            assert!(eb < ea * 1.1, "{bits} bits: log8 {eb} vs f16 {ea}");
        }
    }

    #[test]
    fn uniform_levels_are_the_symmetric_integer_grid() {
        let l4 = uniform_levels(4);
        assert_eq!(l4.len(), 16);
        assert_eq!((l4[0], l4[8], l4[15]), (-8.0 / 7.0, 0.0, 1.0));
        assert_eq!(
            uniform_levels(3),
            [
                -4.0 / 3.0,
                -1.0,
                -2.0 / 3.0,
                -1.0 / 3.0,
                0.0,
                1.0 / 3.0,
                2.0 / 3.0,
                1.0
            ]
        );
        assert_eq!(uniform_levels(2), [-2.0, -1.0, 0.0, 1.0]);
    }

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let a = (s >> 40) as f32 / (1u64 << 24) as f32;
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let b = (s >> 40) as f32 / (1u64 << 24) as f32;
                // Roughly Gaussian: sum of two uniforms, centred.
                a + b - 1.0
            })
            .collect()
    }

    #[test]
    fn lloyd_finds_separated_clusters() {
        let vals = [-1.0f32, -1.01, -0.99, 0.5, 0.51, 0.49, 2.0, 2.02];
        let lv = fit_levels(&vals, &[1.0; 8], 3, 50).unwrap();
        assert!(
            (lv[0] + 1.0).abs() < 1e-3 && (lv[1] - 0.5).abs() < 1e-3 && (lv[2] - 2.01).abs() < 1e-3,
            "{lv:?}"
        );
        assert!(fit_levels(&vals, &[0.0; 8], 3, 5).is_err());
    }

    #[test]
    fn weights_pull_levels_toward_heavy_points() {
        let vals = [0.0f32, 1.0];
        let lv = fit_levels(&vals, &[1.0, 3.0], 1, 10).unwrap();
        assert!((lv[0] - 0.75).abs() < 1e-6, "{lv:?}");
    }

    #[test]
    fn learned_levels_beat_the_uniform_grid_at_every_width() {
        let (rows, cols, group) = (16, 172, 64);
        let w = noise(rows * cols, 7);
        for bits in 2..=4u32 {
            let cb = quantize_codebook(&w, rows, cols, learned(bits), group, None, None).unwrap();
            let k = (1 << bits) as f32;
            // Uniform grid with the same absmax scales: levels −1 … 1 in 2^bits steps.
            let uni: Vec<f32> = (0..1 << bits)
                .map(|i| -1.0 + 2.0 * i as f32 / (k - 1.0))
                .collect();
            let un = CbTensor::from_float(&w, rows, cols, group, uni).unwrap();
            let err = |d: Vec<f32>| -> f64 {
                d.iter()
                    .zip(&w)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum()
            };
            let (e_cb, e_un) = (err(cb.dequantize()), err(un.dequantize()));
            assert!(
                e_cb < e_un,
                "{bits} bits: codebook {e_cb} vs uniform {e_un}"
            );
        }
    }

    #[test]
    fn gptq_to_levels_lowers_the_output_error() {
        let (rows, cols, n) = (8, 40, 400);
        let w = noise(rows * cols, 3);
        // Correlated inputs: x_c = z_c + z_{c+1}.
        let z = noise(n * (cols + 1), 11);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| {
                z[(i / cols) * (cols + 1) + i % cols] + z[(i / cols) * (cols + 1) + i % cols + 1]
            })
            .collect();
        let st = TensorStats::from_inputs(&x, cols);
        let rtn = quantize_codebook(&w, rows, cols, learned(3), 20, Some(&st), None).unwrap();
        let gq = quantize_codebook(
            &w,
            rows,
            cols,
            learned(3),
            20,
            Some(&st),
            Some(&GptqConfig::default()),
        )
        .unwrap();
        let (e_rtn, e_gq) = (
            st.relative_output_error(&w, &rtn.dequantize(), rows),
            st.relative_output_error(&w, &gq.dequantize(), rows),
        );
        assert!(e_gq < e_rtn, "gptq {e_gq} vs nearest {e_rtn}");
        assert!(
            quantize_codebook(
                &w,
                rows,
                cols,
                learned(3),
                20,
                None,
                Some(&GptqConfig::default())
            )
            .is_err()
        );
    }
}
