//! AVX2 helpers of the int8 activation staging ([`crate::scratch`]): absmax and
//! round-half-away quantization of 8 floats at a time. Bit-identical to the
//! scalar loop (same IEEE operations: `r = v·qi`, `trunc(r + copysign(½, r))`;
//! max and integer sums are exact), so staging never changes results.

use std::arch::x86_64::*;

/// `max(init, max |v|)`.
///
/// # Safety
/// AVX2 + FMA + F16C must be available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn absmax(v: &[f32], init: f32) -> f32 {
    let full = v.len() / 8 * 8;
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_set1_ps(init);
    for i in (0..full).step_by(8) {
        // SAFETY: i + 8 <= v.len().
        let x = unsafe { _mm256_loadu_ps(v.as_ptr().add(i)) };
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, x));
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    let m = lanes.iter().fold(init, |a, &b| a.max(b));
    v[full..].iter().fold(m, |a, x| a.max(x.abs()))
}

/// The 8 codes of `v[0..8]` at scale `qi` as i32 lanes: `r = v·qi`,
/// `trunc(r + copysign(½, r))` clamped to ±127 (the scalar loop's operations).
///
/// # Safety
/// AVX2 must be available; 8 floats readable at `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes8(v: *const f32, qi: __m256) -> __m256i {
    // SAFETY: 8 readable floats (caller).
    let r = _mm256_mul_ps(unsafe { _mm256_loadu_ps(v) }, qi);
    let half = _mm256_or_ps(_mm256_and_ps(r, _mm256_set1_ps(-0.0)), _mm256_set1_ps(0.5));
    let q = _mm256_cvttps_epi32(_mm256_add_ps(r, half));
    _mm256_max_epi32(
        _mm256_min_epi32(q, _mm256_set1_epi32(127)),
        _mm256_set1_epi32(-127),
    )
}

/// Quantizes 8 floats `v[0..8]` with `qi` into `dst[0..8]` and returns the 8
/// codes as i32 lanes (for the caller's running sum).
///
/// # Safety
/// AVX2 must be available; `v.len() >= 8` and `dst.len() >= 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quant8(v: &[f32], qi: f32, dst: &mut [i8]) -> __m256i {
    debug_assert!(v.len() >= 8 && dst.len() >= 8);
    // SAFETY: 8 readable floats and 8 writable bytes (caller).
    unsafe {
        let q = codes8(v.as_ptr(), _mm256_set1_ps(qi));
        let p16 = _mm256_packs_epi32(q, q);
        let p8 = _mm256_packs_epi16(p16, p16);
        // Bytes 0..4 of each 128-bit lane hold the codes: bring dword 4 next to dword 0.
        let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
        _mm_storel_epi64(dst.as_mut_ptr() as *mut __m128i, _mm256_castsi256_si128(p8));
        q
    }
}

/// Sum of the 8 i32 lanes (callers need AVX2: the function carries the feature).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum_epi32(q: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Quantizes 32 floats `v[0..32]` with `qi` (same rounding and clamp as
/// [`quant8`]) and stores codes 0..16 at `lo[0..16]` and 16..32 at `hi[0..16]`
/// (the two halves of a chunk in the staging order); returns the codes' sum as
/// i32 lanes.
///
/// # Safety
/// AVX2 must be available; `v.len() >= 32`, `lo.len() >= 16`, `hi.len() >= 16`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quant32(v: &[f32], qi: f32, lo: &mut [i8], hi: &mut [i8]) -> __m256i {
    debug_assert!(v.len() >= 32 && lo.len() >= 16 && hi.len() >= 16);
    // SAFETY: 32 readable floats and 2 × 16 writable bytes (caller).
    unsafe {
        let qiv = _mm256_set1_ps(qi);
        let q: [__m256i; 4] = std::array::from_fn(|k| codes8(v.as_ptr().add(8 * k), qiv));
        // Per 128-bit lane: bytes [q0 | q1 | q2 | q3] of elements 0..4 (low lane)
        // and 4..8 (high lane); the dword permute restores element order.
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm_storeu_si128(lo.as_mut_ptr() as *mut __m128i, _mm256_castsi256_si128(p));
        _mm_storeu_si128(
            hi.as_mut_ptr() as *mut __m128i,
            _mm256_extracti128_si256::<1>(p),
        );
        _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]))
    }
}
