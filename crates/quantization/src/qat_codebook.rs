//! QAT of codebook tensors: the weights, their group scales and the tensor's levels train
//! together (straight-through estimator), and the export packs exactly what the forward used.
//!
//! A codebook tensor `W [rows, cols]` of a QAT plan holds three parameters: the latent weights
//! `w`, `ln s [rows, n_groups]` and `levels [2^bits]`. The forward is
//!
//! ```text
//! s̃ = round(exp(ln s))                    (rounding by a straight-through add)
//! x = w / s̃                               [rows, cols]
//! k = nearest level of x                  (chosen on the host, a constant of the graph)
//! W̃ = s̃ · (levels[k] + m · (x − sg(x)))   m = 1 where x lies within [min level, max level]
//! ```
//!
//! so `∂W̃/∂w = m` (the straight-through estimator, cut outside the table's range as LSQ cuts
//! outside its clamp), `∂W̃/∂s̃ = levels[k] − m·x` (LSQ's scale gradient, Esser et al. 2020) and
//! `∂W̃/∂levels[j] = s̃` for every weight coded `j` — the gradient a k-means centroid gets from the
//! loss instead of from the squared distance. Levels may cross while they train; the export
//! sorts them (and renumbers the codes), which changes no dequantized value.
//!
//! `round` is the storage's: F16 for [`CbScales::F16`]; for [`CbScales::Log8`] the nearest
//! `B · log8_scale(c)` with `B` the power of two at or above the largest scale of the step, and the
//! levels then pass through `F16(B · L) / B` (another straight-through add) — the export stores
//! `log8_scale(c)` and `F16(B · L)`, whose products are bit-identical to the forward's.

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use half::f16;
use squish_core::codebook::scales::to_log8;
use squish_core::codebook::{CbScales, CbTensor, bits_for_levels, nearest_level};
use squish_core::model::tensor_to_vec;
use squish_core::{Error, Result};

use crate::codebook::{CodebookSpec, fit_scales_and_levels};
use crate::qat::{learned_scale, rounded_column_scales};

/// The starting point of a codebook tensor's trained parameters: `(ln s [rows, n_groups],
/// levels [2^bits])` of the post-training fit ([`fit_scales_and_levels`] in `scales`' format:
/// absmax scales, levels by Lloyd-Max weighted by `importance [cols]`, uniform weights without
/// calibration). A `Log8` fit's base `B` moves back into the scales (`B · s`, `L / B`).
pub fn initial_codebook(
    w: &[f32],
    rows: usize,
    cols: usize,
    bits: u32,
    group: usize,
    scales: CbScales,
    importance: Option<&[f32]>,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let col_w: Vec<f64> = match importance {
        Some(m) => m.iter().map(|&x| x as f64).collect(),
        None => vec![1.0; cols],
    };
    let spec = CodebookSpec {
        bits,
        learned: true,
        scales,
    };
    let fit = fit_scales_and_levels(w, rows, cols, spec, group, &col_w)?;
    Ok((
        fit.scales
            .iter()
            .map(|&x| (x.to_f32() * fit.base).ln())
            .collect(),
        fit.levels.iter().map(|&l| l / fit.base).collect(),
    ))
}

/// How `format` stores scales `s` (host values of `exp(ln s)`, `[rows, n_groups]`) and `levels`:
/// `(stored scales, stored levels, B)` — F16 scales, unchanged levels and `B = 1`, or
/// `log8_scale(nearest)`, `F16(B · L)` and the power of two `B` (module docs). The export packs
/// these; the forward uses `B · scale` and `level / B`, whose products are the same bits.
fn stored(format: CbScales, s: &[f32], levels: &[f32]) -> (Vec<f16>, Vec<f32>, f32) {
    match format {
        CbScales::F16 => (
            s.iter().map(|&x| learned_scale(x)).collect(),
            levels.to_vec(),
            1.0,
        ),
        CbScales::Log8 => to_log8(s, levels, false),
    }
}

/// The forward's values of [`stored`]: scales `B · stored` and levels `stored / B`.
fn rounded(format: CbScales, s: &[f32], levels: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (scales, levels, base) = stored(format, s, levels);
    (
        scales.iter().map(|g| g.to_f32() * base).collect(),
        levels.iter().map(|&l| l / base).collect(),
    )
}

/// What one codebook tensor's fake-quant forward produced besides the weights.
#[derive(Debug)]
pub struct CodebookForward {
    /// The code (index into the training-order levels) of every weight `[rows · cols]`.
    pub codes: Vec<u8>,
    /// `dampen · Σ (clip(w / sg(s̃)) − sg(levels[k]))²` over the tensor's weights (Nagel et al.
    /// 2022's oscillation dampening: it pulls each latent towards the level it is coded as, its
    /// gradient reaches the latents only; the network passes `dampen` divided by its count of
    /// codebook weights, so the terms sum to a mean); `None` when `dampen` is 0.
    pub dampening: Option<Tensor<1>>,
}

/// Replaces `p` by its fake-quantized value on the trained codebook (module docs): scales
/// `exp(log_s)` `[rows, n_groups]` and `levels [2^bits]` rounded as `format` stores them, groups
/// of `group`; with `dampen > 0` also the dampening term of [`CodebookForward`].
pub fn codebook_straight_through(
    p: &mut Param<Tensor<2>>,
    log_s: &Tensor<2>,
    levels: &Tensor<1>,
    group: usize,
    format: CbScales,
    dampen: f32,
) -> Result<CodebookForward> {
    let w = p.val(); // [rows, cols]
    let [rows, cols] = w.dims();
    let device = w.device();
    let raw_levels = tensor_to_vec(levels.clone().detach())?;
    let mut host_levels = Vec::new();
    let s = rounded_column_scales(log_s, rows, cols, group, |s| {
        let (s, l) = rounded(format, s, &raw_levels);
        host_levels = l;
        s
    })?; // [rows, cols], stored values
    // [2^bits]: the stored levels' values, the gradient of the trained ones.
    let n = raw_levels.len();
    let offset: Vec<f32> = host_levels
        .iter()
        .zip(&raw_levels)
        .map(|(h, r)| h - r)
        .collect();
    let levels = levels.clone() + Tensor::<1>::from_data(TensorData::new(offset, [n]), &device);
    let x = w / s.clone(); // [rows, cols]
    let host_x = tensor_to_vec(x.clone().detach())?;
    let lo = host_levels.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = host_levels
        .iter()
        .cloned()
        .fold(f32::NEG_INFINITY, f32::max);
    let codes: Vec<u8> = host_x
        .iter()
        .map(|&v| nearest_level(&host_levels, v))
        .collect();
    let inside: Vec<f32> = host_x
        .iter()
        .map(|&v| if (lo..=hi).contains(&v) { 1.0 } else { 0.0 })
        .collect();
    let index: Vec<i64> = codes.iter().map(|&k| k as i64).collect();
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [rows * cols]), &device);
    let inside = Tensor::<2>::from_data(TensorData::new(inside, [rows, cols]), &device); // [rows, cols], constant
    let q = levels.clone().select(0, index).reshape([rows, cols]); // [rows, cols]
    let dampening = (dampen > 0.0).then(|| {
        // [rows, cols]: the latent in level units (scale held fixed), clipped to the table.
        let x_fixed = (p.val() / s.clone().detach()).clamp(lo, hi);
        let d = x_fixed - q.clone().detach();
        (d.clone() * d).sum() * dampen
    });
    let through = (x.clone() - x.detach()) * inside; // [rows, cols], zero-valued
    *p = Param::initialized(p.id, (q + through) * s);
    Ok(CodebookForward { codes, dampening })
}

/// The packed tensor of a trained codebook entry, equal to its forward: scales `s` `[rows,
/// n_groups]` (the forward's `exp(ln s)`, rounded here as there for `format`), `levels [2^bits]`
/// in training order (sorted here, codes renumbered), codes the nearest level of `w / s̃`.
pub fn export_codebook(
    w: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    format: CbScales,
    scales: &[f32],
    levels: &[f32],
) -> Result<CbTensor> {
    let bits = bits_for_levels(levels.len())?;
    crate::spec::check_weights(w, rows, cols)?;
    let n_groups = cols.div_ceil(group);
    if scales.len() != rows * n_groups {
        return Err(Error::invalid(format!(
            "{} scales for {rows} rows × {n_groups} groups",
            scales.len()
        )));
    }
    // [rows, n_groups] stored scales, [2^bits] stored levels (log8: the base folded in).
    let (scales, levels, _) = stored(format, scales, levels);
    let levels = &levels[..];
    let codes: Vec<u8> = w
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let s = scales[(i / cols) * n_groups + (i % cols) / group].to_f32();
            nearest_level(levels, x / s)
        })
        .collect();
    // Sort the levels; `rank[k]` is old level k's place in the sorted table.
    let mut order: Vec<usize> = (0..levels.len()).collect();
    order.sort_by(|&a, &b| levels[a].total_cmp(&levels[b]).then(a.cmp(&b)));
    let mut rank = vec![0u8; levels.len()];
    for (new, &old) in order.iter().enumerate() {
        rank[old] = new as u8;
    }
    let sorted: Vec<f32> = order.iter().map(|&k| levels[k]).collect();
    let codes: Vec<u8> = codes.iter().map(|&k| rank[k as usize]).collect();
    CbTensor::from_codes(bits, rows, cols, group, &codes, scales, sorted)?.into_scale_format(format)
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::model::CpuBackend;

    #[test]
    fn export_sorts_levels_without_changing_values() {
        let (rows, cols, group) = (3usize, 5usize, 2usize);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let levels = [0.5f32, -1.0, 1.0, -0.25]; // unsorted, as training may leave them
        let scales = vec![1.3f32; rows * cols.div_ceil(group)];
        let t = export_codebook(&w, rows, cols, group, CbScales::F16, &scales, &levels).unwrap();
        assert_eq!(t.levels, vec![-1.0, -0.25, 0.5, 1.0]);
        let s = learned_scale(1.3).to_f32();
        let want: Vec<f32> = w
            .iter()
            .map(|&x| s * levels[nearest_level(&levels, x / s) as usize])
            .collect();
        assert_eq!(t.dequantize(), want);
    }

    #[test]
    fn export_rejects_bad_shapes() {
        let w = vec![0.5f32; 6];
        let f = CbScales::Log8;
        assert!(export_codebook(&w, 2, 3, 2, f, &[1.0; 4], &[0.0; 5]).is_err());
        assert!(export_codebook(&w, 2, 3, 2, f, &[1.0; 3], &[0.0; 4]).is_err());
        let mut nan = w.clone();
        nan[2] = f32::NAN;
        assert!(export_codebook(&nan, 2, 3, 2, f, &[1.0; 4], &[0.0; 4]).is_err());
    }

    #[test]
    fn straight_through_forward_equals_the_export_and_levels_get_gradients() {
        for format in [CbScales::F16, CbScales::Log8] {
            forward_equals_export(format);
        }
    }

    fn forward_equals_export(format: CbScales) {
        let device = CpuBackend::default().autodiff_device();
        let (rows, cols, group) = (4, 7, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0 * (1.0 + (i % 4) as f32))
            .collect();
        let (log_s, levels) = initial_codebook(&w, rows, cols, 2, group, format, None).unwrap();
        let ng = cols.div_ceil(group);
        let wt = Tensor::<2>::from_data(TensorData::new(w.clone(), [rows, cols]), &device);
        let mut p = Param::from_tensor(wt).set_require_grad(true);
        let ls = Tensor::<2>::from_data(TensorData::new(log_s.clone(), [rows, ng]), &device)
            .require_grad();
        let lv =
            Tensor::<1>::from_data(TensorData::new(levels.clone(), [4]), &device).require_grad();
        codebook_straight_through(&mut p, &ls, &lv, group, format, 0.0).unwrap();
        let fq = p.val();
        let got = tensor_to_vec(fq.clone().detach()).unwrap();
        let s: Vec<f32> = tensor_to_vec(ls.clone().detach().exp()).unwrap();
        let t = export_codebook(&w, rows, cols, group, format, &s, &levels).unwrap();
        assert_eq!(t.scale_format, format);
        assert_eq!(got, t.dequantize(), "{format:?}");
        // The start is the post-training fit: its dequantized values, bit for bit.
        let spec = CodebookSpec {
            bits: 2,
            learned: true,
            scales: format,
        };
        let ptq = crate::codebook::quantize_codebook(&w, rows, cols, spec, group, None, None);
        assert_eq!(got, ptq.unwrap().dequantize(), "{format:?}");
        let grads = fq.sum().backward();
        let g_levels = tensor_to_vec(lv.grad(&grads).unwrap()).unwrap();
        assert!(g_levels.iter().any(|&g| g != 0.0), "{g_levels:?}");
        assert!(
            tensor_to_vec(ls.grad(&grads).unwrap())
                .unwrap()
                .iter()
                .any(|&g| g != 0.0)
        );
    }
}
