//! The quantization grid of one group: F16 scale (and zero point), code choice, packing.
//!
//! Scales are rounded to F16 **before** codes are chosen, and rounded *up* to the next F16 when
//! rounding-to-nearest would shrink them, so the min-max range is still covered: RTN then keeps
//! every dequantized value within half a step (`scale / 2`) of the original.

use half::f16;
use squish_core::Result;
use squish_core::quant::QTensor;

use crate::spec::QuantFormat;

/// Scale and zero point of one (row, group).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupParams {
    /// The F16 scale codes are chosen against.
    pub scale: f16,
    /// Zero point (asymmetric formats; 0 otherwise).
    pub zero: u8,
}

impl GroupParams {
    /// The scale as f32.
    #[inline]
    pub fn s(&self) -> f32 {
        self.scale.to_f32()
    }
}

/// The smallest F16 ≥ `s` (`s` finite, ≥ 0); 0 and values below the smallest subnormal give
/// the smallest positive subnormal. Values above F16::MAX are an error. (The one rounding of
/// stored scales, shared with the codebook format.)
pub use squish_core::codebook::scales::f16_at_least;

/// Group parameters from the values `v` of one group, with the range shrunk by `clip ∈ (0, 1]`.
/// Symmetric: `scale = clip · max|v| / div` (`div` = 7 or 8 for INT4, 127 for INT8).
/// Asymmetric: the range `[min(v, 0), max(v, 0)] · clip` mapped onto `[0, qmax]`.
pub fn params_for(v: &[f32], fmt: &QuantFormat, clip: f32, div: f32) -> Result<GroupParams> {
    params_for_range(group_range(v), fmt, clip, div)
}

/// `(min(v, 0), max(v, 0))` of a group: the range [`params_for`] starts from.
pub fn group_range(v: &[f32]) -> (f32, f32) {
    v.iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// [`params_for`] from a group's [`group_range`] (searches that try many clips compute the range
/// once).
pub fn params_for_range(
    (lo, hi): (f32, f32),
    fmt: &QuantFormat,
    clip: f32,
    div: f32,
) -> Result<GroupParams> {
    if fmt.asym {
        let qmax = fmt.level_range().1 as f32;
        let (lo, hi) = (lo * clip, hi * clip);
        if hi - lo <= 0.0 {
            return Ok(GroupParams {
                scale: f16::ONE,
                zero: 0,
            });
        }
        let scale = f16_at_least((hi - lo) / qmax)?;
        let zero = (-lo / scale.to_f32()).round().clamp(0.0, qmax) as u8;
        Ok(GroupParams { scale, zero })
    } else {
        let amax = lo.abs().max(hi) * clip;
        if amax <= 0.0 {
            return Ok(GroupParams {
                scale: f16::ONE,
                zero: 0,
            });
        }
        Ok(GroupParams {
            scale: f16_at_least(amax / div)?,
            zero: 0,
        })
    }
}

/// The default symmetric divisor: the largest positive level (7 for INT4, 127 for INT8).
pub fn sym_div(fmt: &QuantFormat) -> f32 {
    fmt.level_range().1 as f32
}

/// The level of `x` on the grid `p` (sym: signed level; asym: unsigned code), clamped.
#[inline]
pub fn level(x: f32, p: &GroupParams, fmt: &QuantFormat) -> i32 {
    let (lo, hi) = fmt.level_range();
    let q = (x / p.s()).round() as i32 + p.zero as i32;
    q.clamp(lo, hi)
}

/// The value a level stands for (exactly what [`QTensor::dequantize`] computes).
#[inline]
pub fn value(level: i32, p: &GroupParams) -> f32 {
    p.s() * (level - p.zero as i32) as f32
}

/// Round-trip of `x` through the grid.
#[inline]
pub fn fake_quant(x: f32, p: &GroupParams, fmt: &QuantFormat) -> f32 {
    value(level(x, p, fmt), p)
}

/// Packs levels `[rows, cols]` and per-(row, group) parameters `[rows, n_groups]` into a QTensor.
pub fn pack(
    fmt: &QuantFormat,
    rows: usize,
    cols: usize,
    group: usize,
    levels: &[i32],
    params: &[GroupParams],
) -> Result<QTensor> {
    let scales = params.iter().map(|p| p.scale).collect();
    let zeros = fmt.asym.then(|| params.iter().map(|p| p.zero).collect());
    QTensor::from_levels(fmt.bits, rows, cols, group, levels, scales, zeros)
}

/// Column ranges of the groups of a row of `cols` values: `[0, g), [g, 2g), …` (last may be short).
pub fn group_ranges(cols: usize, group: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..cols.div_ceil(group)).map(move |g| g * group..((g + 1) * group).min(cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounding_never_shrinks_the_scale() {
        for s in [1e-9f32, 3.3e-5, 0.0123456, 0.3333333, 1.0, 7.77777, 1000.1] {
            let h = f16_at_least(s).unwrap();
            assert!(h.to_f32() >= s && h.to_f32() > 0.0, "{s} -> {h}");
        }
        assert!(f16_at_least(1e6).is_err());
    }

    #[test]
    fn asym_zero_point_stays_in_range() {
        let fmt = QuantFormat::new(4, Some(4), true).unwrap();
        for v in [
            [1.0f32, 2.0, 3.0, 4.0],
            [-4.0, -3.0, -2.0, -1.0],
            [-1.0, 0.0, 5.0, 2.0],
        ] {
            let p = params_for(&v, &fmt, 1.0, 0.0).unwrap();
            assert!(p.zero <= 15);
            for x in v {
                assert!((fake_quant(x, &p, &fmt) - x).abs() <= p.s() / 2.0 + 1e-6);
            }
        }
    }
}
