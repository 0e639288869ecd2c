//! Elementwise activations on plain slices, value and derivative in one pass: SiLU and SoftPlus
//! (β = 1), in [`W`]-lane chunks with the scan's branch-free `exp` ([`exp_lanes`]) so the loops
//! vectorize; every [`ScanIsa`] path gives the same bits.
//!
//! - SiLU: `s = 1 / (1 + e^{−x})`, `y = x·s`, `y′ = s·(1 + x·(1 − s))`.
//! - SoftPlus: `e = e^{−|x|}`, `y = max(x, 0) + ln(1 + e)`, `y′ = σ(x)` (= `1/(1 + e)` for
//!   `x ≥ 0`, `e/(1 + e)` below); `ln(1 + e)` for `e ∈ (0, 1]` is `2·atanh(e/(2 + e))`, an odd
//!   series in `u = e/(2 + e) ≤ ⅓` that reaches f32 precision in 8 terms.

use super::lanes::isa_variants;
use super::scan_kernel::{ScanIsa, W, clamp_isa, exp_lanes};

/// Which activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// `x·σ(x)`.
    Silu,
    /// `ln(1 + eˣ)`.
    Softplus,
}

/// `(y, ∂y/∂x)` of `act` at every element of `x`, on the `isa` path (clamped to what the CPU
/// supports).
pub fn act_forward(act: Act, x: &[f32], isa: ScanIsa) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0; x.len()];
    let mut d = vec![0.0; x.len()];
    match clamp_isa(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `clamp_isa` checked that this CPU has AVX-512F.
        ScanIsa::Avx512 => unsafe { all_avx512(act, x, &mut y, &mut d) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `clamp_isa` checked that this CPU has AVX2.
        ScanIsa::Avx2 => unsafe { all_avx2(act, x, &mut y, &mut d) },
        _ => all(act, x, &mut y, &mut d),
    }
    (y, d)
}

isa_variants!(all, all_avx2, all_avx512, (act: Act, x: &[f32], y: &mut [f32], d: &mut [f32]));

/// Every element of `x`.
#[inline(always)]
fn all(act: Act, x: &[f32], y: &mut [f32], d: &mut [f32]) {
    match act {
        Act::Silu => chunks::<true>(x, y, d),
        Act::Softplus => chunks::<false>(x, y, d),
    }
}

/// SiLU (`SILU`) or SoftPlus over `W`-lane chunks (the tail zero-padded); direct calls, so the
/// lane functions inline into the caller's instruction set.
#[inline(always)]
fn chunks<const SILU: bool>(x: &[f32], y: &mut [f32], d: &mut [f32]) {
    let mut xs = x.chunks_exact(W);
    let mut ys = y.chunks_exact_mut(W);
    let mut ds = d.chunks_exact_mut(W);
    for ((xc, yc), dc) in (&mut xs).zip(&mut ys).zip(&mut ds) {
        let xa: &[f32; W] = xc.try_into().expect("a full chunk");
        let (yv, dv) = if SILU {
            silu_lanes(xa)
        } else {
            softplus_lanes(xa)
        };
        yc.copy_from_slice(&yv);
        dc.copy_from_slice(&dv);
    }
    let (xr, yr, dr) = (xs.remainder(), ys.into_remainder(), ds.into_remainder());
    if !xr.is_empty() {
        let mut xa = [0.0; W];
        xa[..xr.len()].copy_from_slice(xr);
        let (yv, dv) = if SILU {
            silu_lanes(&xa)
        } else {
            softplus_lanes(&xa)
        };
        yr.copy_from_slice(&yv[..xr.len()]);
        dr.copy_from_slice(&dv[..xr.len()]);
    }
}

/// SiLU and its derivative on one chunk.
#[inline(always)]
fn silu_lanes(x: &[f32; W]) -> ([f32; W], [f32; W]) {
    let mut neg = [0.0; W];
    for k in 0..W {
        neg[k] = -x[k];
    }
    let e = exp_lanes(&neg);
    let (mut y, mut d) = ([0.0; W], [0.0; W]);
    for k in 0..W {
        // Below −87.3 `exp` saturates (see `exp_lanes`); σ is 0 there to f32 precision.
        let s = if x[k] < -87.3 {
            0.0
        } else {
            1.0 / (1.0 + e[k])
        };
        y[k] = x[k] * s;
        d[k] = s * (1.0 + x[k] * (1.0 - s));
    }
    (y, d)
}

/// SoftPlus and its derivative (σ) on one chunk.
#[inline(always)]
fn softplus_lanes(x: &[f32; W]) -> ([f32; W], [f32; W]) {
    let mut neg_abs = [0.0; W];
    for k in 0..W {
        neg_abs[k] = -x[k].abs();
    }
    let e = exp_lanes(&neg_abs);
    let (mut y, mut d) = ([0.0; W], [0.0; W]);
    for k in 0..W {
        let inv = 1.0 / (1.0 + e[k]);
        y[k] = (if x[k] > 0.0 { x[k] } else { 0.0 }) + ln_1p_unit(e[k]);
        d[k] = if x[k] >= 0.0 { inv } else { e[k] * inv };
    }
    (y, d)
}

/// `ln(1 + e)` for `e ∈ [0, 1]`: `2·(u + u³/3 + … + u¹⁵/15)` with `u = e/(2 + e)`.
#[inline(always)]
fn ln_1p_unit(e: f32) -> f32 {
    let u = e / (2.0 + e);
    let u2 = u * u;
    let mut p = 1.0 / 15.0;
    for c in [
        1.0 / 13.0,
        1.0 / 11.0,
        1.0 / 9.0,
        1.0 / 7.0,
        1.0 / 5.0,
        1.0 / 3.0,
        1.0,
    ] {
        p = p * u2 + c;
    }
    2.0 * u * p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(act: Act, x: f64) -> (f64, f64) {
        let s = 1.0 / (1.0 + (-x).exp());
        match act {
            Act::Silu => (x * s, s * (1.0 + x * (1.0 - s))),
            Act::Softplus => (x.max(0.0) + (-x.abs()).exp().ln_1p(), s),
        }
    }

    #[test]
    fn matches_f64_formulas_on_every_path_and_tail() {
        let mut xs: Vec<f32> = (0..=4003).map(|i| -100.0 + i as f32 * 0.05).collect();
        xs.extend([-1e30, -3.0e38, f32::MIN, -87.4, 87.4, 1e30]);
        for act in [Act::Silu, Act::Softplus] {
            let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
            for isa in ScanIsa::available() {
                for len in [1usize, 15, 17, xs.len()] {
                    let (y, d) = act_forward(act, &xs[..len], isa);
                    assert_eq!((y.len(), d.len()), (len, len));
                    for (i, &x) in xs[..len].iter().enumerate() {
                        let (wy, wd) = reference(act, x as f64);
                        let tol = |w: f64| 2e-6 * w.abs().max(1.0);
                        assert!(
                            (y[i] as f64 - wy).abs() <= tol(wy),
                            "{act:?} y({x}) = {} vs {wy}",
                            y[i]
                        );
                        assert!(
                            (d[i] as f64 - wd).abs() <= tol(wd),
                            "{act:?} y'({x}) = {} vs {wd}",
                            d[i]
                        );
                    }
                }
                let full = act_forward(act, &xs, isa);
                match &first {
                    None => first = Some(full),
                    Some(f) => assert_eq!(f, &full, "{act:?}: {isa:?} differs from baseline"),
                }
            }
        }
    }

    #[test]
    fn empty_input_gives_empty_output() {
        assert_eq!(
            act_forward(Act::Silu, &[], ScanIsa::Baseline),
            (vec![], vec![])
        );
    }
}
