//! AVX2 + FMA bodies of the runtime's SSM element-wise kernels, vectorised over
//! `d_inner` (8 channels per register): conv + SiLU, `softplus(v + bias)`,
//! `y ⊙ SiLU(z)` and the selective-scan step on the transposed state. The step
//! logic, shapes, scalar path and dispatch are in `runtime/ssm_ops.rs`; the
//! scalar tails here call its scalar helpers so tail channels equal the scalar path.
//!
//! Every function carries `#[target_feature]`; callers must have checked AVX2
//! support (`crate::dispatch::has_avx2`) and the shapes `ssm_ops` asserts.

use crate::ops_avx2::exp256;
use crate::runtime::ssm_ops::{scan_channel, silu, softplus};
use std::arch::x86_64::*;

/// Vector `ln x` for normal positive `x` (frexp + Cephes-style degree-8
/// polynomial on `[√½, √2)`, ≈ 1e-7 relative).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ln256(x: __m256) -> __m256 {
    let bits = _mm256_castps_si256(x);
    let mut e = _mm256_cvtepi32_ps(_mm256_sub_epi32(
        _mm256_srli_epi32::<23>(bits),
        _mm256_set1_epi32(126),
    ));
    // m ∈ [0.5, 1)
    let m = _mm256_castsi256_ps(_mm256_or_si256(
        _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
        _mm256_set1_epi32(0x3f00_0000),
    ));
    let small = _mm256_cmp_ps::<_CMP_LT_OQ>(m, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
    // m < √½: use 2m − 1 and e − 1; else m − 1.
    let one = _mm256_set1_ps(1.0);
    e = _mm256_sub_ps(e, _mm256_and_ps(small, one));
    let m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), one);
    let z = _mm256_mul_ps(m, m);
    let mut p = _mm256_set1_ps(7.037_683_6e-2);
    for c in [
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        p = _mm256_fmadd_ps(p, m, _mm256_set1_ps(c));
    }
    let mut y = _mm256_mul_ps(_mm256_mul_ps(p, m), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.121_944_4e-4), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5), y);
    let r = _mm256_add_ps(m, y);
    _mm256_fmadd_ps(e, _mm256_set1_ps(0.693_359_4), r)
}

/// `v · sigmoid(v)` (the same operations as the inner loop of `ops_avx2::swiglu`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn silu256(v: __m256) -> __m256 {
    let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
    _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

/// `2^y` (the scan's `exp(Δ·A)` with `log2 e` folded into Δ): `y = n + f`,
/// `n = round(y)`, `2^f` by a degree-5 polynomial fitted on `[−½, ½]`
/// (≈ 2.3e-7 relative in f32), `2^n` built in the exponent bits. `y` is
/// clamped to `[−126, 127]` (below: ≈ 1e-38 instead of a denormal or 0).
/// 14 operations where [`exp256`] takes 20.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp2_256(y: __m256) -> __m256 {
    let y = _mm256_min_ps(
        _mm256_max_ps(y, _mm256_set1_ps(-126.0)),
        _mm256_set1_ps(127.0),
    );
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
    let f = _mm256_sub_ps(y, n);
    let mut p = _mm256_set1_ps(1.327_644_5e-3);
    for c in [
        9.675_537e-3,
        5.550_713_5e-2,
        2.402_212e-1,
        6.931_469_4e-1,
        1.000_000_1,
    ] {
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
    }
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(e))
}

/// `softplus(v) = max(v, 0) + ln(1 + e^{−|v|})`; exactly `v` above 20 (burn).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn softplus256(v: __m256) -> __m256 {
    let abs = _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
    let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), abs));
    let r = _mm256_add_ps(
        _mm256_max_ps(v, _mm256_setzero_ps()),
        ln256(_mm256_add_ps(_mm256_set1_ps(1.0), e)),
    );
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(v, _mm256_set1_ps(20.0));
    _mm256_blendv_ps(r, v, big)
}

// Unchecked load/store for the scan's hot loop; `ops_avx2`'s `ld`/`st` are the bounds-checked kind.
/// Loads `s[i..i+8]` (caller guarantees `i + 8 <= s.len()`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ld(s: &[f32], i: usize) -> __m256 {
    debug_assert!(i + 8 <= s.len());
    // SAFETY: caller guarantees the 8 elements exist.
    unsafe { _mm256_loadu_ps(s.as_ptr().add(i)) }
}

/// Stores `s[i..i+8]` (caller guarantees `i + 8 <= s.len()`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn st(s: &mut [f32], i: usize, v: __m256) {
    debug_assert!(i + 8 <= s.len());
    // SAFETY: caller guarantees the 8 elements exist.
    unsafe { _mm256_storeu_ps(s.as_mut_ptr().add(i), v) }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn conv_silu(
    win: &[f32],
    taps: &[f32],
    bias: &[f32],
    xin: &[f32],
    out: &mut [f32],
    k: usize,
) {
    let di = out.len();
    let full = di / 8 * 8;
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= di and every row has di entries (checked by caller).
        unsafe {
            let mut acc = ld(bias, i);
            for j in 0..k - 1 {
                acc = _mm256_fmadd_ps(ld(win, j * di + i), ld(taps, j * di + i), acc);
            }
            acc = _mm256_fmadd_ps(ld(xin, i), ld(taps, (k - 1) * di + i), acc);
            st(out, i, silu256(acc));
        }
    }
    for i in full..di {
        let mut acc = bias[i];
        for j in 0..k - 1 {
            acc = win[j * di + i].mul_add(taps[j * di + i], acc);
        }
        acc = xin[i].mul_add(taps[(k - 1) * di + i], acc);
        out[i] = silu(acc);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn softplus_bias(v: &mut [f32], bias: &[f32]) {
    let n = v.len();
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= n for both slices.
        unsafe { st(v, i, softplus256(_mm256_add_ps(ld(v, i), ld(bias, i)))) };
    }
    for (x, b) in v[full..].iter_mut().zip(&bias[full..]) {
        *x = softplus(*x + b);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn mul_silu(y: &mut [f32], z: &[f32]) {
    let n = y.len();
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= n for both slices.
        unsafe { st(y, i, _mm256_mul_ps(ld(y, i), silu256(ld(z, i)))) };
    }
    for (a, b) in y[full..].iter_mut().zip(&z[full..]) {
        *a *= silu(*b);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn scan_t(
    x: &[f32],
    delta: &[f32],
    b: &[f32],
    c: &[f32],
    a: &[f32],
    dskip: &[f32],
    h: &mut [f32],
    y: &mut [f32],
) {
    let di = x.len();
    let full = di / 8 * 8;
    // Two channel blocks per pass over the states and two partial sums per
    // block: four independent exp → state → readout chains in flight.
    let mut i = 0;
    while i + 16 <= full {
        // SAFETY: i + 16 <= di; rows of a / h have di entries, ns rows (caller).
        unsafe { scan_blocks::<2>(i, x, delta, b, c, a, dskip, h, y) };
        i += 16;
    }
    if i < full {
        // SAFETY: i + 8 <= di, as above.
        unsafe { scan_blocks::<1>(i, x, delta, b, c, a, dskip, h, y) };
    }
    for i in full..di {
        y[i] = scan_channel(i, x, delta, b, c, a, dskip, h);
    }
}

/// `P` blocks of 8 channels from channel `i`: states of even and odd `k` are
/// read out into separate partial sums (per channel the same operations
/// whatever `P`).
///
/// # Safety
/// AVX2 + FMA + F16C; `i + 8·P <= x.len()` and the shapes of [`scan_t`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn scan_blocks<const P: usize>(
    i: usize,
    x: &[f32],
    delta: &[f32],
    b: &[f32],
    c: &[f32],
    a: &[f32],
    dskip: &[f32],
    h: &mut [f32],
    y: &mut [f32],
) {
    let (di, ns) = (x.len(), b.len());
    let log2e = _mm256_set1_ps(std::f32::consts::LOG2_E);
    // SAFETY: every access is at `k·di + i + 8p + 0..8` or `i + 8p + 0..8`,
    // inside the arrays by the caller's contract.
    unsafe {
        let xv: [__m256; P] = std::array::from_fn(|p| ld(x, i + 8 * p));
        let dt: [__m256; P] = std::array::from_fn(|p| ld(delta, i + 8 * p));
        let dx: [__m256; P] = std::array::from_fn(|p| _mm256_mul_ps(dt[p], xv[p]));
        // exp(Δ·A) = 2^(Δ·log2 e · A).
        let t: [__m256; P] = std::array::from_fn(|p| _mm256_mul_ps(dt[p], log2e));
        let mut acc = [
            std::array::from_fn::<_, P, _>(|p| _mm256_mul_ps(ld(dskip, i + 8 * p), xv[p])),
            [_mm256_setzero_ps(); P],
        ];
        for k in 0..ns {
            let (bk, ck) = (_mm256_set1_ps(b[k]), _mm256_set1_ps(c[k]));
            for p in 0..P {
                let o = k * di + i + 8 * p;
                let da = exp2_256(_mm256_mul_ps(t[p], ld(a, o)));
                let hv = _mm256_fmadd_ps(dx[p], bk, _mm256_mul_ps(da, ld(h, o)));
                st(h, o, hv);
                acc[k & 1][p] = _mm256_fmadd_ps(hv, ck, acc[k & 1][p]);
            }
        }
        for p in 0..P {
            st(y, i + 8 * p, _mm256_add_ps(acc[0][p], acc[1][p]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan's `2^y` is within 4e-7 relative of the exact value over its whole
    /// input range (−126 ≤ y ≤ 127), including the exponent boundaries.
    #[test]
    fn exp2_256_relative_error() {
        if !crate::dispatch::has_avx2(crate::dispatch::detect()) {
            return;
        }
        let mut ys: Vec<f32> = (0..=253 * 64).map(|i| -126.0 + i as f32 / 64.0).collect();
        ys.extend([
            -0.5,
            0.5,
            -0.499_999_97,
            0.499_999_97,
            -1e-8,
            0.0,
            126.999,
            127.0,
        ]);
        let mut worst = 0f64;
        for c in ys.chunks(8) {
            let mut v = [0f32; 8];
            v[..c.len()].copy_from_slice(c);
            let mut out = [0f32; 8];
            // SAFETY: AVX2 + FMA + F16C detected above; 8 floats in and out.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp2_256(_mm256_loadu_ps(v.as_ptr()))) };
            for (y, r) in v.iter().zip(out).take(c.len()) {
                let want = (*y as f64).exp2();
                worst = worst.max(((r as f64 - want) / want).abs());
            }
        }
        assert!(worst <= 4e-7, "worst relative error {worst}");
    }
}
