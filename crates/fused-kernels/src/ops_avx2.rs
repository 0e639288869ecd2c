//! AVX2 + FMA versions of the element-wise ops (also used on the AVX-512 path).

use crate::avx2::hsum;
use std::arch::x86_64::*;

/// Vector `exp` (Cephes-style range reduction + degree-6 polynomial,
/// max relative error ≈ 2e-7 on [-87, 88]; inputs are clamped to that range).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn exp256(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
        _mm256_set1_ps(88.3),
    );
    let fx = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(0.5),
    ));
    let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
    let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), x);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(x, x),
        _mm256_add_ps(x, _mm256_set1_ps(1.0)),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(fx),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(e))
}

/// Scalar exp used for tails so SIMD and tail elements agree closely.
fn exp_tail(x: f32) -> f32 {
    x.exp()
}

/// Loads 8 floats from `s[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ld(s: &[f32], i: usize) -> __m256 {
    let s = &s[i..i + 8];
    // SAFETY: `s` has exactly 8 elements (bounds-checked slice above).
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Stores 8 floats to `s[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn st(s: &mut [f32], i: usize, v: __m256) {
    let s = &mut s[i..i + 8];
    // SAFETY: `s` has exactly 8 elements (bounds-checked slice above).
    unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
}

/// `out = w ⊙ x · 1/sqrt(mean(x²) + eps)`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let n = x.len();
    let full = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    for i in (0..full).step_by(8) {
        let v = ld(x, i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    let ss = hsum(acc) + x[full..].iter().map(|v| v * v).sum::<f32>();
    let inv = 1.0 / (ss / n as f32 + eps).sqrt();
    let vi = _mm256_set1_ps(inv);
    for i in (0..full).step_by(8) {
        st(out, i, _mm256_mul_ps(ld(w, i), _mm256_mul_ps(vi, ld(x, i))));
    }
    for i in full..n {
        out[i] = w[i] * (inv * x[i]);
    }
}

/// In-place softmax.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn softmax(x: &mut [f32]) {
    let n = x.len();
    let full = n / 8 * 8;
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..full).step_by(8) {
        mv = _mm256_max_ps(mv, ld(x, i));
    }
    let mut lanes = [0f32; 8];
    st(&mut lanes, 0, mv);
    let m = lanes
        .iter()
        .chain(&x[full..])
        .fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    let vm = _mm256_set1_ps(m);
    let mut acc = _mm256_setzero_ps();
    for i in (0..full).step_by(8) {
        let e = exp256(_mm256_sub_ps(ld(x, i), vm));
        st(x, i, e);
        acc = _mm256_add_ps(acc, e);
    }
    let mut sum = hsum(acc);
    for v in &mut x[full..] {
        *v = exp_tail(*v - m);
        sum += *v;
    }
    let inv = _mm256_set1_ps(1.0 / sum);
    for i in (0..full).step_by(8) {
        st(x, i, _mm256_mul_ps(ld(x, i), inv));
    }
    for v in &mut x[full..] {
        *v *= 1.0 / sum;
    }
}

/// `out = silu(g) ⊙ u` with `silu(v) = v / (1 + exp(−v))`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn swiglu(out: &mut [f32], g: &[f32], u: &[f32]) {
    let n = out.len();
    let full = n / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    for i in (0..full).step_by(8) {
        let gv = ld(g, i);
        let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        let s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
        st(out, i, _mm256_mul_ps(s, ld(u, i)));
    }
    for i in full..n {
        out[i] = g[i] / (1.0 + exp_tail(-g[i])) * u[i];
    }
}
