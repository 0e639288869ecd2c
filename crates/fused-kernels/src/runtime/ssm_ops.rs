//! Element-wise SSM kernels of the runtime, vectorised over `d_inner` (8 channels
//! per AVX2 register) with a scalar path chosen by [`SimdLevel`]:
//! causal depthwise conv + SiLU, `softplus(v + bias)`, `y ⊙ SiLU(z)` and the
//! selective-scan step on a *transposed* state `h [N, d_inner]` (so the scan
//! needs no horizontal sums).
//!
//! Bounds (AVX2 vs scalar, tested below): the polynomial `exp` / `ln` are within
//! ≈ 2e-7 relative of libm, so every output is within `1e-5 · (1 + |value|)`.

use crate::dispatch::SimdLevel;

/// `v · sigmoid(v)`.
#[inline]
fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// `ln(1 + eᵛ)` (burn's softplus, β = 1).
#[inline]
fn softplus(v: f32) -> f32 {
    if v > 20.0 { v } else { v.exp().ln_1p() }
}

fn avx2(level: SimdLevel) -> bool {
    crate::dispatch::has_avx2(level)
}

/// `out[i] = SiLU(bias[i] + Σ_{j<k−1} win[j, i]·taps[j, i] + xin[i]·taps[k−1, i])`
/// with `win [k−1, di]` (oldest first) and `taps [k, di]` (transposed conv weight).
pub(crate) fn conv_silu(
    level: SimdLevel,
    win: &[f32],
    taps: &[f32],
    bias: &[f32],
    xin: &[f32],
    out: &mut [f32],
) {
    let di = out.len();
    let k = taps.len() / di.max(1);
    assert!(
        taps.len() == k * di && k >= 1 && win.len() == (k - 1) * di && bias.len() == di,
        "conv_silu: shapes"
    );
    assert!(xin.len() == di);
    #[cfg(target_arch = "x86_64")]
    if avx2(level) {
        // SAFETY: level ≥ AVX2 was verified against the CPU; lengths asserted above.
        unsafe { x86::conv_silu(win, taps, bias, xin, out, k) };
        return;
    }
    for i in 0..di {
        let mut acc = bias[i];
        for j in 0..k - 1 {
            acc += win[j * di + i] * taps[j * di + i];
        }
        acc += xin[i] * taps[(k - 1) * di + i];
        out[i] = silu(acc);
    }
}

/// `v[i] = softplus(v[i] + bias[i])`.
pub(crate) fn softplus_bias(level: SimdLevel, v: &mut [f32], bias: &[f32]) {
    assert!(v.len() == bias.len(), "softplus_bias: shapes");
    #[cfg(target_arch = "x86_64")]
    if avx2(level) {
        // SAFETY: level ≥ AVX2 was verified against the CPU; lengths asserted above.
        unsafe { x86::softplus_bias(v, bias) };
        return;
    }
    for (x, b) in v.iter_mut().zip(bias) {
        *x = softplus(*x + b);
    }
}

/// `y[i] *= SiLU(z[i])`.
pub(crate) fn mul_silu(level: SimdLevel, y: &mut [f32], z: &[f32]) {
    assert!(y.len() == z.len(), "mul_silu: shapes");
    #[cfg(target_arch = "x86_64")]
    if avx2(level) {
        // SAFETY: level ≥ AVX2 was verified against the CPU; lengths asserted above.
        unsafe { x86::mul_silu(y, z) };
        return;
    }
    for (a, b) in y.iter_mut().zip(z) {
        *a *= silu(*b);
    }
}

/// One selective-scan step on transposed state: for every channel `i` and state
/// `k`: `h[k, i] = exp(Δ_i·A[k, i])·h[k, i] + Δ_i·x_i·B_k`,
/// `y_i = Σ_k C_k·h[k, i] + D_i·x_i`. Shapes: `x, delta, dskip, y [di]`,
/// `b, c [N]`, `a, h [N, di]`.
pub(crate) fn scan_t(
    level: SimdLevel,
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
    assert!(
        delta.len() == di && dskip.len() == di && y.len() == di && c.len() == ns,
        "scan_t: shapes"
    );
    assert!(
        a.len() == ns * di && h.len() == ns * di,
        "scan_t: state shape"
    );
    #[cfg(target_arch = "x86_64")]
    if avx2(level) {
        // SAFETY: level ≥ AVX2 was verified against the CPU; lengths asserted above.
        unsafe { x86::scan_t(x, delta, b, c, a, dskip, h, y) };
        return;
    }
    for i in 0..di {
        y[i] = scan_channel(i, x, delta, b, c, a, dskip, h);
    }
}

/// The scalar scan step of channel `i` (see [`scan_t`]); updates its `N` states
/// and returns `y_i`.
#[allow(clippy::too_many_arguments)]
#[inline]
fn scan_channel(
    i: usize,
    x: &[f32],
    delta: &[f32],
    b: &[f32],
    c: &[f32],
    a: &[f32],
    dskip: &[f32],
    h: &mut [f32],
) -> f32 {
    let (di, ns) = (x.len(), b.len());
    let (dt, xi) = (delta[i], x[i]);
    let mut acc = 0f32;
    for k in 0..ns {
        let hv = (dt * a[k * di + i]).exp() * h[k * di + i] + dt * xi * b[k];
        h[k * di + i] = hv;
        acc += hv * c[k];
    }
    acc + dskip[i] * xi
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::ops_avx2::exp256;
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
    pub(super) fn exp2_256(y: __m256) -> __m256 {
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
    pub(super) unsafe fn conv_silu(
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
            out[i] = super::silu(acc);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn softplus_bias(v: &mut [f32], bias: &[f32]) {
        let n = v.len();
        let full = n / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 <= n for both slices.
            unsafe { st(v, i, softplus256(_mm256_add_ps(ld(v, i), ld(bias, i)))) };
        }
        for (x, b) in v[full..].iter_mut().zip(&bias[full..]) {
            *x = super::softplus(*x + b);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn mul_silu(y: &mut [f32], z: &[f32]) {
        let n = y.len();
        let full = n / 8 * 8;
        for i in (0..full).step_by(8) {
            // SAFETY: i + 8 <= n for both slices.
            unsafe { st(y, i, _mm256_mul_ps(ld(y, i), silu256(ld(z, i)))) };
        }
        for (a, b) in y[full..].iter_mut().zip(&z[full..]) {
            *a *= super::silu(*b);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scan_t(
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
            y[i] = super::scan_channel(i, x, delta, b, c, a, dskip, h);
        }
    }

    /// `P` blocks of 8 channels from channel `i`: states of even and odd `k` are
    /// read out into separate partial sums (per channel the same operations
    /// whatever `P`).
    ///
    /// # Safety
    /// AVX2 + FMA + F16C; `i + 8·P <= x.len()` and the shapes of [`super::scan_t`].
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::data::Rng;

    fn rnd(rng: &mut Rng, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * a).collect()
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}: {x} vs {y}"
            );
        }
    }

    /// The scan's `2^y` is within 4e-7 relative of the exact value over its whole
    /// input range (−126 ≤ y ≤ 127), including the exponent boundaries.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp2_256_relative_error() {
        use std::arch::x86_64::*;
        if !avx2(crate::dispatch::detect()) {
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
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr(), x86::exp2_256(_mm256_loadu_ps(v.as_ptr())))
            };
            for (y, r) in v.iter().zip(out).take(c.len()) {
                let want = (*y as f64).exp2();
                worst = worst.max(((r as f64 - want) / want).abs());
            }
        }
        assert!(worst <= 4e-7, "worst relative error {worst}");
    }

    /// Every AVX2 SSM kernel equals the scalar path within `1e-5·(1+|v|)` over
    /// widths 1, 17, 64, 172 and random others.
    #[test]
    fn ssm_kernels_avx2_match_scalar() {
        let simd = crate::dispatch::detect();
        if !avx2(simd) {
            return;
        }
        let mut rng = Rng::new(5);
        let mut widths = vec![1usize, 7, 8, 9, 17, 64, 172];
        widths.extend((0..20).map(|_| 1 + rng.below(200)));
        for &di in &widths {
            for k in [1usize, 2, 4] {
                let win = rnd(&mut rng, (k - 1) * di, 2.0);
                let taps = rnd(&mut rng, k * di, 1.0);
                let (bias, xin) = (rnd(&mut rng, di, 0.5), rnd(&mut rng, di, 3.0));
                let mut o = [vec![0.0; di], vec![0.0; di]];
                for (lv, o) in [SimdLevel::Scalar, simd].into_iter().zip(o.iter_mut()) {
                    conv_silu(lv, &win, &taps, &bias, &xin, o);
                }
                close(&o[1], &o[0], "conv_silu");
            }
            // softplus over the whole interesting range, incl. > 20 and very negative.
            let v = rnd(&mut rng, di, 40.0);
            let bias = rnd(&mut rng, di, 1.0);
            let mut o = [v.clone(), v.clone()];
            softplus_bias(SimdLevel::Scalar, &mut o[0], &bias);
            softplus_bias(simd, &mut o[1], &bias);
            close(&o[1], &o[0], "softplus");
            let z = rnd(&mut rng, di, 30.0);
            let mut o = [v.clone(), v.clone()];
            mul_silu(SimdLevel::Scalar, &mut o[0], &z);
            mul_silu(simd, &mut o[1], &z);
            close(&o[1], &o[0], "mul_silu");
            for ns in [1usize, 16] {
                let x = rnd(&mut rng, di, 2.0);
                let delta: Vec<f32> = rnd(&mut rng, di, 1.0).iter().map(|v| v.abs()).collect();
                let (b, c) = (rnd(&mut rng, ns, 1.0), rnd(&mut rng, ns, 1.0));
                let a: Vec<f32> = rnd(&mut rng, ns * di, 4.0)
                    .iter()
                    .map(|v| -v.abs())
                    .collect();
                let d = rnd(&mut rng, di, 1.0);
                let h0 = rnd(&mut rng, ns * di, 1.0);
                let mut h = [h0.clone(), h0];
                let mut y = [vec![0.0; di], vec![0.0; di]];
                for _ in 0..3 {
                    for (j, lv) in [SimdLevel::Scalar, simd].into_iter().enumerate() {
                        scan_t(lv, &x, &delta, &b, &c, &a, &d, &mut h[j], &mut y[j]);
                    }
                }
                close(&y[1], &y[0], "scan y");
                close(&h[1], &h[0], "scan h");
            }
        }
    }
}
