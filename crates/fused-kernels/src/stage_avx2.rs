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

/// Quantizes 8 floats `v[i..i+8]` with `qi` into `dst[0..8]` and returns their sum.
///
/// # Safety
/// AVX2 must be available; `v.len() >= 8` and `dst.len() >= 8`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quant8(v: &[f32], qi: f32, dst: &mut [i8]) -> i32 {
    debug_assert!(v.len() >= 8 && dst.len() >= 8);
    // SAFETY: 8 readable floats and 8 writable bytes (caller).
    unsafe {
        let r = _mm256_mul_ps(_mm256_loadu_ps(v.as_ptr()), _mm256_set1_ps(qi));
        let half = _mm256_or_ps(_mm256_and_ps(r, _mm256_set1_ps(-0.0)), _mm256_set1_ps(0.5));
        let q = _mm256_cvttps_epi32(_mm256_add_ps(r, half));
        let q = _mm256_max_epi32(
            _mm256_min_epi32(q, _mm256_set1_epi32(127)),
            _mm256_set1_epi32(-127),
        );
        let p16 = _mm256_packs_epi32(q, q);
        let p8 = _mm256_packs_epi16(p16, p16);
        let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(p8)) as u32 as u64;
        let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(p8)) as u32 as u64;
        (dst.as_mut_ptr() as *mut u64).write_unaligned(lo | (hi << 32));
        // Sum of the 8 values.
        let s = _mm_add_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}
