//! x86-64 intrinsic kernels (AVX2+FMA+F16C, AVX-VNNI, AVX-512 F/BW, AVX-512 VNNI).
//!
//! Every function here carries `#[target_feature]`; callers (in `bench::dispatch`) must have
//! verified the features at runtime. Inside, the only `unsafe` operations are unaligned loads
//! whose bounds are checked by the loop conditions.
//!
//! The peak loops repeat one shape per ISA on purpose: each measures one instruction's throughput.

use std::arch::x86_64::*;

use super::portable;

/// Independent 256-bit accumulators in [`fma_peak_avx2`] (covers 2 FMA ports x 4-5 cycles).
pub const AVX2_FMA_ACCUMULATORS: usize = 12;
/// Independent 512-bit accumulators in [`fma_peak_avx512`].
pub const AVX512_FMA_ACCUMULATORS: usize = 16;

#[target_feature(enable = "avx2,fma")]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(s, s))
}

#[target_feature(enable = "avx2")]
fn hsum256_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_hadd_epi32(s, s);
    _mm_cvtsi128_si32(_mm_hadd_epi32(s, s))
}

/// AVX2 FMA peak loop; 12 accumulators x 8 lanes x 2 flops per repetition.
#[target_feature(enable = "avx2,fma")]
pub fn fma_peak_avx2(reps: u64, a: f32, b: f32) -> f32 {
    let (va, vb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
    let mut acc = [_mm256_set1_ps(1.0); AVX2_FMA_ACCUMULATORS];
    for _ in 0..reps {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, va, vb);
        }
    }
    let mut s = acc[0];
    for x in &acc[1..] {
        s = _mm256_add_ps(s, *x);
    }
    hsum256(s)
}

/// AVX-512 FMA peak loop; 16 accumulators x 16 lanes x 2 flops per repetition.
#[target_feature(enable = "avx512f")]
pub fn fma_peak_avx512(reps: u64, a: f32, b: f32) -> f32 {
    let (va, vb) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
    let mut acc = [_mm512_set1_ps(1.0); AVX512_FMA_ACCUMULATORS];
    for _ in 0..reps {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, va, vb);
        }
    }
    let mut s = acc[0];
    for x in &acc[1..] {
        s = _mm512_add_ps(s, *x);
    }
    _mm512_reduce_add_ps(s)
}

/// Independent ymm accumulators of the register-resident INT8 peak loops (each with its own
/// weight register: 2 x 6 + 2 of the 16 ymm registers).
pub const INT8_PEAK_ACC_YMM: usize = 6;
/// Independent zmm accumulators of the AVX-512 INT8 peak loops (2 x 12 + 2 of 32 registers).
pub const INT8_PEAK_ACC_ZMM: usize = 12;

// The INT8 peak loops keep every operand in registers, like the FP32 peak, yet cannot be folded
// by the compiler: accumulator `i` multiplies by its own weight `b + i`, and the activation
// byte `a` is incremented once per repetition (one extra byte add per 6 or 12 dot steps), so
// no product is loop-invariant or shared between accumulators. Sum over the loop:
// `Σ_rep Σ_i bytes · (a + rep mod 256) · (b + i)`, exact in wrapping i32.

/// Register-resident INT8 peak with AVX2: `vpmaddubsw` + `vpmaddwd` + `vpaddd` per
/// accumulator; [`INT8_PEAK_ACC_YMM`] x 32 byte pairs x 2 ops per repetition.
#[target_feature(enable = "avx2")]
pub fn int8_peak_avx2(reps: u64, a: u8, b: i8) -> i32 {
    let (mut va, one, ones) = (
        _mm256_set1_epi8(a as i8),
        _mm256_set1_epi8(1),
        _mm256_set1_epi16(1),
    );
    let vb: [__m256i; INT8_PEAK_ACC_YMM] =
        std::array::from_fn(|i| _mm256_set1_epi8(b.wrapping_add(i as i8)));
    let mut acc = [_mm256_setzero_si256(); INT8_PEAK_ACC_YMM];
    for _ in 0..reps {
        for (x, w) in acc.iter_mut().zip(&vb) {
            *x = _mm256_add_epi32(*x, _mm256_madd_epi16(_mm256_maddubs_epi16(va, *w), ones));
        }
        va = _mm256_add_epi8(va, one);
    }
    let mut s = acc[0];
    for x in &acc[1..] {
        s = _mm256_add_epi32(s, *x);
    }
    hsum256_epi32(s)
}

/// Register-resident INT8 peak with AVX-VNNI: one `vpdpbusd ymm` per accumulator;
/// [`INT8_PEAK_ACC_YMM`] x 32 byte pairs x 2 ops per repetition.
#[target_feature(enable = "avx2,avxvnni")]
pub fn int8_peak_avxvnni(reps: u64, a: u8, b: i8) -> i32 {
    let (mut va, one) = (_mm256_set1_epi8(a as i8), _mm256_set1_epi8(1));
    let vb: [__m256i; INT8_PEAK_ACC_YMM] =
        std::array::from_fn(|i| _mm256_set1_epi8(b.wrapping_add(i as i8)));
    let mut acc = [_mm256_setzero_si256(); INT8_PEAK_ACC_YMM];
    for _ in 0..reps {
        for (x, w) in acc.iter_mut().zip(&vb) {
            *x = _mm256_dpbusd_avx_epi32(*x, va, *w);
        }
        va = _mm256_add_epi8(va, one);
    }
    let mut s = acc[0];
    for x in &acc[1..] {
        s = _mm256_add_epi32(s, *x);
    }
    hsum256_epi32(s)
}

/// Register-resident INT8 peak with AVX-512 BW: `vpmaddubsw` + `vpmaddwd` + `vpaddd` zmm per
/// accumulator; [`INT8_PEAK_ACC_ZMM`] x 64 byte pairs x 2 ops per repetition.
#[target_feature(enable = "avx512f,avx512bw")]
pub fn int8_peak_avx512bw(reps: u64, a: u8, b: i8) -> i32 {
    let (mut va, one, ones) = (
        _mm512_set1_epi8(a as i8),
        _mm512_set1_epi8(1),
        _mm512_set1_epi16(1),
    );
    let vb: [__m512i; INT8_PEAK_ACC_ZMM] =
        std::array::from_fn(|i| _mm512_set1_epi8(b.wrapping_add(i as i8)));
    let mut acc = [_mm512_setzero_si512(); INT8_PEAK_ACC_ZMM];
    for _ in 0..reps {
        for (x, w) in acc.iter_mut().zip(&vb) {
            *x = _mm512_add_epi32(*x, _mm512_madd_epi16(_mm512_maddubs_epi16(va, *w), ones));
        }
        va = _mm512_add_epi8(va, one);
    }
    let mut s = acc[0];
    for x in &acc[1..] {
        s = _mm512_add_epi32(s, *x);
    }
    _mm512_reduce_add_epi32(s)
}

/// Register-resident INT8 peak with AVX-512 VNNI: one `vpdpbusd zmm` per accumulator (the
/// counterpart of [`fma_peak_avx512`]); [`INT8_PEAK_ACC_ZMM`] x 64 byte pairs x 2 ops per
/// repetition.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub fn int8_peak_avx512vnni(reps: u64, a: u8, b: i8) -> i32 {
    let (mut va, one) = (_mm512_set1_epi8(a as i8), _mm512_set1_epi8(1));
    let vb: [__m512i; INT8_PEAK_ACC_ZMM] =
        std::array::from_fn(|i| _mm512_set1_epi8(b.wrapping_add(i as i8)));
    let mut acc = [_mm512_setzero_si512(); INT8_PEAK_ACC_ZMM];
    for _ in 0..reps {
        for (x, w) in acc.iter_mut().zip(&vb) {
            *x = _mm512_dpbusd_epi32(*x, va, *w);
        }
        va = _mm512_add_epi8(va, one);
    }
    let mut s = acc[0];
    for x in &acc[1..] {
        s = _mm512_add_epi32(s, *x);
    }
    _mm512_reduce_add_epi32(s)
}

/// f16 weights x f32 activations: F16C `vcvtph2ps` + FMA, 4 x 8 lanes per step.
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_f16_avx2(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            // SAFETY: o + 8 <= i + 32 <= n <= len of both slices; loads are unaligned.
            let (wv, xv) = unsafe {
                (
                    _mm_loadu_si128(w.as_ptr().add(o).cast()),
                    _mm256_loadu_ps(x.as_ptr().add(o)),
                )
            };
            *a = _mm256_fmadd_ps(_mm256_cvtph_ps(wv), xv, *a);
        }
        i += 32;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum256(s) + portable::dot_f16(&w[i..n], &x[i..n])
}

/// f16 weights x f32 activations with AVX-512 (`vcvtph2ps zmm` + FMA), 4 x 16 lanes per step.
#[target_feature(enable = "avx512f")]
pub fn dot_f16_avx512(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 16 * k;
            // SAFETY: o + 16 <= i + 64 <= n <= len of both slices; loads are unaligned.
            let (wv, xv) = unsafe {
                (
                    _mm256_loadu_si256(w.as_ptr().add(o).cast()),
                    _mm512_loadu_ps(x.as_ptr().add(o)),
                )
            };
            *a = _mm512_fmadd_ps(_mm512_cvtph_ps(wv), xv, *a);
        }
        i += 64;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s) + portable::dot_f16(&w[i..n], &x[i..n])
}

/// u8 x i8 dot with AVX2 `vpmaddubsw` (pairs -> i16, saturating) + `vpmaddwd` (-> i32).
/// Exact when activations are <= 127 (no i16 saturation).
#[target_feature(enable = "avx2")]
pub fn dot_u8i8_avx2(a: &[u8], w: &[i8]) -> i32 {
    let n = a.len().min(w.len());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut i = 0;
    while i + 128 <= n {
        for (k, s) in acc.iter_mut().enumerate() {
            let o = i + 32 * k;
            // SAFETY: o + 32 <= i + 128 <= n <= len of both slices; loads are unaligned.
            let (av, wv) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(o).cast()),
                    _mm256_loadu_si256(w.as_ptr().add(o).cast()),
                )
            };
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(av, wv), ones);
            *s = _mm256_add_epi32(*s, p);
        }
        i += 128;
    }
    let s = _mm256_add_epi32(
        _mm256_add_epi32(acc[0], acc[1]),
        _mm256_add_epi32(acc[2], acc[3]),
    );
    hsum256_epi32(s).wrapping_add(portable::dot_u8i8(&a[i..n], &w[i..n]))
}

/// u8 x i8 dot with AVX-VNNI `vpdpbusd ymm` (4 u8xi8 products summed into each i32 lane).
#[target_feature(enable = "avx2,avxvnni")]
pub fn dot_u8i8_avxvnni(a: &[u8], w: &[i8]) -> i32 {
    let n = a.len().min(w.len());
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut i = 0;
    while i + 128 <= n {
        for (k, s) in acc.iter_mut().enumerate() {
            let o = i + 32 * k;
            // SAFETY: o + 32 <= i + 128 <= n <= len of both slices; loads are unaligned.
            let (av, wv) = unsafe {
                (
                    _mm256_loadu_si256(a.as_ptr().add(o).cast()),
                    _mm256_loadu_si256(w.as_ptr().add(o).cast()),
                )
            };
            *s = _mm256_dpbusd_avx_epi32(*s, av, wv);
        }
        i += 128;
    }
    let s = _mm256_add_epi32(
        _mm256_add_epi32(acc[0], acc[1]),
        _mm256_add_epi32(acc[2], acc[3]),
    );
    hsum256_epi32(s).wrapping_add(portable::dot_u8i8(&a[i..n], &w[i..n]))
}

/// u8 x i8 dot with AVX-512BW `vpmaddubsw zmm` + `vpmaddwd zmm` (no VNNI).
#[target_feature(enable = "avx512f,avx512bw")]
pub fn dot_u8i8_avx512bw(a: &[u8], w: &[i8]) -> i32 {
    let n = a.len().min(w.len());
    let ones = _mm512_set1_epi16(1);
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i + 256 <= n {
        for (k, s) in acc.iter_mut().enumerate() {
            let o = i + 64 * k;
            // SAFETY: o + 64 <= i + 256 <= n <= len of both slices; loads are unaligned.
            let (av, wv) = unsafe {
                (
                    _mm512_loadu_si512(a.as_ptr().add(o).cast()),
                    _mm512_loadu_si512(w.as_ptr().add(o).cast()),
                )
            };
            let p = _mm512_madd_epi16(_mm512_maddubs_epi16(av, wv), ones);
            *s = _mm512_add_epi32(*s, p);
        }
        i += 256;
    }
    let s = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], acc[1]),
        _mm512_add_epi32(acc[2], acc[3]),
    );
    _mm512_reduce_add_epi32(s).wrapping_add(portable::dot_u8i8(&a[i..n], &w[i..n]))
}

/// u8 x i8 dot with AVX-512 VNNI `vpdpbusd zmm`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub fn dot_u8i8_avx512vnni(a: &[u8], w: &[i8]) -> i32 {
    let n = a.len().min(w.len());
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i + 256 <= n {
        for (k, s) in acc.iter_mut().enumerate() {
            let o = i + 64 * k;
            // SAFETY: o + 64 <= i + 256 <= n <= len of both slices; loads are unaligned.
            let (av, wv) = unsafe {
                (
                    _mm512_loadu_si512(a.as_ptr().add(o).cast()),
                    _mm512_loadu_si512(w.as_ptr().add(o).cast()),
                )
            };
            *s = _mm512_dpbusd_epi32(*s, av, wv);
        }
        i += 256;
    }
    let s = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], acc[1]),
        _mm512_add_epi32(acc[2], acc[3]),
    );
    _mm512_reduce_add_epi32(s).wrapping_add(portable::dot_u8i8(&a[i..n], &w[i..n]))
}

/// Row-major f32 matvec, AVX2+FMA: 4 rows at a time sharing each `x` load.
#[target_feature(enable = "avx2,fma")]
pub fn matvec_avx2(w: &[f32], x: &[f32], y: &mut [f32], rows: usize, cols: usize) {
    assert!(w.len() >= rows * cols && x.len() >= cols && y.len() >= rows);
    let cv = cols / 8 * 8;
    let mut r = 0;
    while r < rows {
        let nr = (rows - r).min(4);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < cv {
            // SAFETY: c + 8 <= cv <= cols <= x.len().
            let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add(c)) };
            for (k, a) in acc.iter_mut().enumerate().take(nr) {
                // SAFETY: (r+k)*cols + c + 8 <= (r+k+1)*cols <= rows*cols <= w.len().
                let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add((r + k) * cols + c)) };
                *a = _mm256_fmadd_ps(wv, xv, *a);
            }
            c += 8;
        }
        for (k, a) in acc.iter().enumerate().take(nr) {
            let row = &w[(r + k) * cols..(r + k + 1) * cols];
            let tail: f32 = row[cv..].iter().zip(&x[cv..cols]).map(|(p, q)| p * q).sum();
            y[r + k] = hsum256(*a) + tail;
        }
        r += nr;
    }
}

/// Row-major f32 matvec, AVX-512F: 4 rows at a time sharing each `x` load.
#[target_feature(enable = "avx512f")]
pub fn matvec_avx512(w: &[f32], x: &[f32], y: &mut [f32], rows: usize, cols: usize) {
    assert!(w.len() >= rows * cols && x.len() >= cols && y.len() >= rows);
    let cv = cols / 16 * 16;
    let mut r = 0;
    while r < rows {
        let nr = (rows - r).min(4);
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut c = 0;
        while c < cv {
            // SAFETY: c + 16 <= cv <= cols <= x.len().
            let xv = unsafe { _mm512_loadu_ps(x.as_ptr().add(c)) };
            for (k, a) in acc.iter_mut().enumerate().take(nr) {
                // SAFETY: (r+k)*cols + c + 16 <= (r+k+1)*cols <= rows*cols <= w.len().
                let wv = unsafe { _mm512_loadu_ps(w.as_ptr().add((r + k) * cols + c)) };
                *a = _mm512_fmadd_ps(wv, xv, *a);
            }
            c += 16;
        }
        for (k, a) in acc.iter().enumerate().take(nr) {
            let row = &w[(r + k) * cols..(r + k + 1) * cols];
            let tail: f32 = row[cv..].iter().zip(&x[cv..cols]).map(|(p, q)| p * q).sum();
            y[r + k] = _mm512_reduce_add_ps(*a) + tail;
        }
        r += nr;
    }
}
