//! How a codebook tensor stores its group scales: F16, or one byte per group on a fixed
//! logarithmic grid with the tensor's magnitude folded into F16 levels (`Log8`).
//!
//! A `Log8` scale code `c ∈ 0..=255` decodes to [`log8_scale`]`(c) = F16(2^((c − 255) / 32))`,
//! a grid of 32 steps per octave from 2^−7.97 ≈ 0.0040 to 1 (each step 2.2 %, so rounding to
//! the nearest code moves a scale by at most 1.1 %). The tensor's own magnitude lives in its
//! levels: a tensor with group scales `s` and levels `L` becomes codes `c = nearest(s / B)` and
//! levels `F16(B · L)`, `B` the smallest power of two `≥ max s` ([`log8_base`]) — a power of two,
//! so `log8_scale(c) · F16(B · L[k])` equals `(B · log8_scale(c)) · (F16(B · L[k]) / B)` exactly
//! in F32 and a QAT forward can train in either form. At 64-wide groups this halves the scales'
//! cost (0.25 → 0.125 bits per weight) and the F16 levels halve the table's.

use half::f16;
use serde::{Deserialize, Serialize};

/// The storage of a codebook tensor's group scales (and, with them, of its levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CbScales {
    /// F16 scales `[rows, n_groups]`, F32 levels.
    F16,
    /// U8 scale codes on the [`log8_scale`] grid, F16 levels holding the tensor's magnitude.
    #[default]
    Log8,
}

impl CbScales {
    /// Bytes one stored scale takes.
    pub fn scale_bytes(self) -> usize {
        match self {
            CbScales::F16 => 2,
            CbScales::Log8 => 1,
        }
    }

    /// Bytes one stored level takes.
    pub fn level_bytes(self) -> usize {
        match self {
            CbScales::F16 => 4,
            CbScales::Log8 => 2,
        }
    }

    /// `f16` or `log8`.
    pub fn name(self) -> &'static str {
        match self {
            CbScales::F16 => "f16",
            CbScales::Log8 => "log8",
        }
    }
}

/// Grid steps per octave of a `Log8` scale code.
pub const LOG8_STEPS_PER_OCTAVE: i32 = 32;

/// `F16(2^(r / 32))` for `r = 0 … 31` (bit patterns; a unit test recomputes them).
const OCTAVE: [u16; 32] = [
    0x3c00, 0x3c16, 0x3c2d, 0x3c45, 0x3c5d, 0x3c75, 0x3c8e, 0x3ca8, 0x3cc2, 0x3cdc, 0x3cf8, 0x3d14,
    0x3d30, 0x3d4d, 0x3d6b, 0x3d89, 0x3da8, 0x3dc8, 0x3de8, 0x3e09, 0x3e2b, 0x3e4e, 0x3e71, 0x3e95,
    0x3eba, 0x3ee0, 0x3f06, 0x3f2e, 0x3f56, 0x3f7f, 0x3fa9, 0x3fd4,
];

/// The scale of `Log8` code `code`: `F16(2^((code − 255) / 32))`, exact from a fixed table (so
/// every machine decodes a file to the same bits). Strictly increasing in `code`; code 255 is 1.
pub fn log8_scale(code: u8) -> f16 {
    let n = i32::from(code) - 255; // −255 ..= 0
    let (e, r) = (
        n.div_euclid(LOG8_STEPS_PER_OCTAVE),
        n.rem_euclid(LOG8_STEPS_PER_OCTAVE),
    );
    // 2^e · m with m ∈ [1, 2): F16's exponent field moves by e (e ≥ −8 stays normal).
    f16::from_bits((OCTAVE[r as usize] as i32 + (e << 10)) as u16)
}

/// The `Log8` code of a stored scale, `None` when `s` is not on the grid.
pub fn log8_index(s: f16) -> Option<u8> {
    (0..=255u8).find(|&c| log8_scale(c).to_bits() == s.to_bits())
}

/// The smallest code whose scale is `≥ ratio` (255 when `ratio > 1`; 0 when `ratio ≤` the
/// smallest scale).
pub fn log8_code_at_least(ratio: f32) -> u8 {
    (0..=255u8)
        .find(|&c| log8_scale(c).to_f32() >= ratio)
        .unwrap_or(255)
}

/// The code whose scale is nearest to `ratio` on the log scale (ties go up).
pub fn log8_code_nearest(ratio: f32) -> u8 {
    let up = log8_code_at_least(ratio);
    if up == 0 || ratio.is_nan() || ratio <= 0.0 {
        return up;
    }
    let (hi, lo) = (log8_scale(up).to_f32(), log8_scale(up - 1).to_f32());
    // Compare ratio / lo against hi / ratio without a logarithm.
    if (ratio as f64) * (ratio as f64) < (lo as f64) * (hi as f64) {
        up - 1
    } else {
        up
    }
}

/// The power of two `B ≥ max_scale` that a tensor's levels absorb (1 when `max_scale` is not a
/// positive finite number; kept within F16's normal range so `F16(B · level)` stays precise).
pub fn log8_base(max_scale: f32) -> f32 {
    if !(max_scale.is_finite() && max_scale > 0.0) {
        return 1.0;
    }
    let mut e = max_scale.log2().ceil() as i32;
    while 2f32.powi(e) < max_scale {
        e += 1;
    }
    while e > -14 && 2f32.powi(e - 1) >= max_scale {
        e -= 1;
    }
    2f32.powi(e.clamp(-14, 15))
}

/// Moves F32 group `scales` and `levels` onto the `Log8` grid: returns the grid scales (each
/// [`log8_scale`] of a code), the folded levels `F16(B · L)` (as F32 values) and `B`
/// ([`log8_base`] of the largest scale). `at_least` rounds each scale up (so an absmax scale
/// still covers its group), otherwise to the nearest code.
pub fn to_log8(scales: &[f32], levels: &[f32], at_least: bool) -> (Vec<f16>, Vec<f32>, f32) {
    let base = log8_base(scales.iter().cloned().fold(0f32, f32::max));
    let grid = scales
        .iter()
        .map(|&s| {
            let r = s / base;
            log8_scale(if at_least {
                log8_code_at_least(r)
            } else {
                log8_code_nearest(r)
            })
        })
        .collect();
    let folded = levels
        .iter()
        .map(|&l| f16::from_f32(base * l).to_f32())
        .collect();
    (grid, folded, base)
}

/// The smallest F16 ≥ `s` (`s` finite, ≥ 0): how a scale is stored so that it still covers its
/// group. 0 and values below the smallest subnormal give the smallest positive subnormal; values
/// above F16::MAX are an error.
pub fn f16_at_least(s: f32) -> crate::Result<f16> {
    if !s.is_finite() || s > f16::MAX.to_f32() {
        return Err(crate::Error::invalid(format!(
            "scale {s} does not fit in F16 (max {})",
            f16::MAX
        )));
    }
    let mut h = f16::from_f32(s.max(0.0));
    if h.to_f32() < s {
        h = f16::from_bits(h.to_bits() + 1);
    }
    if h.to_f32() <= 0.0 {
        h = f16::from_bits(1);
    }
    Ok(h)
}

/// Whether `v` is exactly an F16 value.
pub fn is_f16_exact(v: f32) -> bool {
    f16::from_f32(v).to_f32().to_bits() == v.to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_f16_of_powers_of_two_and_strictly_increasing() {
        for c in 0..=255u8 {
            let want = f16::from_f64(2f64.powf((c as f64 - 255.0) / 32.0));
            assert_eq!(log8_scale(c).to_bits(), want.to_bits(), "code {c}");
            if c > 0 {
                assert!(log8_scale(c) > log8_scale(c - 1));
            }
            assert_eq!(log8_index(log8_scale(c)), Some(c));
        }
        assert_eq!(log8_scale(255), f16::ONE);
        assert_eq!(log8_index(f16::from_f32(0.3)), None);
    }

    #[test]
    fn nearest_and_at_least_codes() {
        for c in 1..=254u8 {
            let s = log8_scale(c).to_f32();
            assert_eq!(log8_code_nearest(s), c);
            assert_eq!(log8_code_at_least(s), c);
            let just_above = s * 1.001;
            assert_eq!(log8_code_at_least(just_above), c + 1);
            assert_eq!(log8_code_nearest(just_above), c);
        }
        assert_eq!(log8_code_at_least(7.0), 255);
        assert_eq!(log8_code_nearest(1e-9), 0);
        assert_eq!(log8_code_nearest(0.0), 0);
    }

    #[test]
    fn base_is_the_smallest_power_of_two_at_or_above() {
        assert_eq!(log8_base(1.0), 1.0);
        assert_eq!(log8_base(0.3), 0.5);
        assert_eq!(log8_base(0.25), 0.25);
        assert_eq!(log8_base(3.0), 4.0);
        assert_eq!(log8_base(0.0), 1.0);
        assert_eq!(log8_base(f32::NAN), 1.0);
    }

    #[test]
    fn folding_keeps_products_within_the_grid_error() {
        let scales = [0.02f32, 0.011, 0.0031, 0.017];
        let levels = [-1.0f32, -0.2, 0.3, 1.0];
        for at_least in [false, true] {
            let (grid, folded, base) = to_log8(&scales, &levels, at_least);
            assert_eq!(base, 0.03125);
            assert!(folded.iter().all(|&l| is_f16_exact(l)));
            for (s, g) in scales.iter().zip(&grid) {
                let r = g.to_f32() * base / s;
                assert!((0.988..1.023).contains(&r), "{s} -> {r}");
                if at_least {
                    assert!(r >= 1.0);
                }
            }
        }
    }
}
