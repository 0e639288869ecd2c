//! aarch64 NEON kernels. NEON is part of the aarch64 baseline, but the functions still carry
//! `#[target_feature(enable = "neon")]` and are only called after runtime detection.
//! (The `dotprod`/`i8mm`/`fp16` intrinsics are unstable in Rust, so INT8 uses `smull`+`sadalp`
//! and FP16 uses the portable converter.)

use std::arch::aarch64::*;

/// Independent 128-bit accumulators in [`fma_peak_neon`].
pub const NEON_FMA_ACCUMULATORS: usize = 16;

/// NEON FMA peak loop; 16 accumulators x 4 lanes x 2 flops per repetition.
#[target_feature(enable = "neon")]
pub fn fma_peak_neon(reps: u64, a: f32, b: f32) -> f32 {
    let (va, vb) = (vdupq_n_f32(a), vdupq_n_f32(b));
    let mut acc = [vdupq_n_f32(1.0); NEON_FMA_ACCUMULATORS];
    for _ in 0..reps {
        for x in acc.iter_mut() {
            // vfmaq_f32(c, p, q) = c + p * q
            *x = vfmaq_f32(vb, *x, va);
        }
    }
    let mut s = acc[0];
    for x in &acc[1..] {
        s = vaddq_f32(s, *x);
    }
    vaddvq_f32(s)
}

/// u8 x i8 dot (activations must be <= 127): `smull`/`smull2` to i16, `sadalp` into i32.
#[target_feature(enable = "neon")]
pub fn dot_u8i8_neon(a: &[u8], w: &[i8]) -> i32 {
    let n = a.len().min(w.len());
    let mut acc = [vdupq_n_s32(0); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, s) in acc.iter_mut().enumerate() {
            let o = i + 16 * k;
            // SAFETY: o + 16 <= i + 64 <= n <= len of both slices.
            let (av, wv) = unsafe {
                (
                    vreinterpretq_s8_u8(vld1q_u8(a.as_ptr().add(o))),
                    vld1q_s8(w.as_ptr().add(o)),
                )
            };
            let lo = vmull_s8(vget_low_s8(av), vget_low_s8(wv));
            let hi = vmull_high_s8(av, wv);
            *s = vpadalq_s16(*s, lo);
            *s = vpadalq_s16(*s, hi);
        }
        i += 64;
    }
    let s = vaddq_s32(vaddq_s32(acc[0], acc[1]), vaddq_s32(acc[2], acc[3]));
    let tail = a[i..n]
        .iter()
        .zip(&w[i..n])
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .fold(0i32, i32::wrapping_add);
    vaddvq_s32(s).wrapping_add(tail)
}

/// Row-major f32 matvec with NEON FMA, 4 rows at a time sharing each `x` load.
#[target_feature(enable = "neon")]
pub fn matvec_neon(w: &[f32], x: &[f32], y: &mut [f32], rows: usize, cols: usize) {
    assert!(w.len() >= rows * cols && x.len() >= cols && y.len() >= rows);
    let cv = cols / 4 * 4;
    let mut r = 0;
    while r < rows {
        let nr = (rows - r).min(4);
        let mut acc = [vdupq_n_f32(0.0); 4];
        let mut c = 0;
        while c < cv {
            // SAFETY: c + 4 <= cv <= cols <= x.len().
            let xv = unsafe { vld1q_f32(x.as_ptr().add(c)) };
            for (k, a) in acc.iter_mut().enumerate().take(nr) {
                // SAFETY: (r+k)*cols + c + 4 <= (r+k+1)*cols <= rows*cols <= w.len().
                let wv = unsafe { vld1q_f32(w.as_ptr().add((r + k) * cols + c)) };
                *a = vfmaq_f32(*a, wv, xv);
            }
            c += 4;
        }
        for (k, a) in acc.iter().enumerate().take(nr) {
            let row = &w[(r + k) * cols..(r + k + 1) * cols];
            let tail: f32 = row[cv..].iter().zip(&x[cv..cols]).map(|(p, q)| p * q).sum();
            y[r + k] = vaddvq_f32(*a) + tail;
        }
        r += nr;
    }
}
