//! AVX2 + FMA + F16C kernels (x86_64).
//!
//! Every kernel is a register tile of `R` weight rows × `T` tokens: a weight
//! chunk is loaded and dequantized once and reused for all `T` tokens (GEMM
//! shape for prefill), and an activation vector is reused across `R` rows
//! (the GEMV shape for decode). Dequantization happens in registers.
//!
//! All functions here carry `#[target_feature]`; callers must have checked
//! [`crate::SimdLevel::Avx2`] support first (`crate::dispatch::has_avx2`).
//!
//! The per-format tiles here and in `avx512.rs`/`neon.rs` repeat one loop shape on purpose: each
//! ISA's intrinsics, lane width and register budget differ, and generics over them cost inlining.

use std::arch::x86_64::*;

mod cb;
mod q4il;
mod q4il_ops;
mod quant;
pub(crate) mod ssm;
pub(crate) use cb::cb_rows;
pub(crate) use q4il::{q4il_rows, q4il_rows_vbmi, q4il_rows_vnni};
pub(crate) use quant::{check_tile, finish_q8, q8_rows, qf_rows};

/// Runs a tile kernel over tokens `0..n` and rows `r0..r1`: rows are walked in
/// blocks of [`ROW_BLOCK`] (so a block of weights stays in L1 while every token
/// passes over it — the weights stream from memory once per GEMM, not once per
/// 4 tokens); inside a block, 4-token tiles with `$r4` rows, then single tokens
/// with `$r1` rows, then 1-row remainders.
macro_rules! drive {
    ($tile:ident, [$($g:tt),*], $r1:literal, $r4:literal, $n:expr, $r0:expr, $rend:expr,
     ($($arg:expr),*), $y:expr, $ldy:expr) => {{
        let (n, r0, rall) = ($n, $r0, $rend);
        let mut rb = r0;
        while rb < rall {
            let rend = if n > 1 { (rb + crate::avx2::ROW_BLOCK).min(rall) } else { rall };
            let mut t = 0;
            while t + 4 <= n {
                let mut r = rb;
                while r + $r4 <= rend {
                    $tile::<$($g,)* $r4, 4>($($arg,)* r, t, $y, $ldy, r0);
                    r += $r4;
                }
                while r < rend {
                    $tile::<$($g,)* 1, 4>($($arg,)* r, t, $y, $ldy, r0);
                    r += 1;
                }
                t += 4;
            }
            while t < n {
                let mut r = rb;
                while r + $r1 <= rend {
                    $tile::<$($g,)* $r1, 1>($($arg,)* r, t, $y, $ldy, r0);
                    r += $r1;
                }
                while r < rend {
                    $tile::<$($g,)* 1, 1>($($arg,)* r, t, $y, $ldy, r0);
                    r += 1;
                }
                t += 1;
            }
            rb = rend;
        }
    }};
}
/// Rows per weight block in multi-token calls (a multiple of every tile height).
pub(crate) const ROW_BLOCK: usize = 32;
pub(crate) use drive;

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Lane `j` = horizontal sum of `a[j]`, bit-identical to [`hsum`]`(a[j])`
/// (same addition order) for a fraction of the cost of 8 separate reductions.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn hsum8(a: &[__m256; 8]) -> __m256 {
    // u_i = lo(a_i) + hi(a_i); U_k holds u_k (low lane) and u_{k+4} (high lane).
    let u: [__m256; 4] = std::array::from_fn(|k| {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a[k], a[k + 4]),
            _mm256_permute2f128_ps::<0x31>(a[k], a[k + 4]),
        )
    });
    // 4×4 transpose inside each 128-bit lane: c_m[i] = u_i[m].
    let t0 = _mm256_unpacklo_ps(u[0], u[1]);
    let t1 = _mm256_unpacklo_ps(u[2], u[3]);
    let t2 = _mm256_unpackhi_ps(u[0], u[1]);
    let t3 = _mm256_unpackhi_ps(u[2], u[3]);
    let c0 = _mm256_shuffle_ps::<0x44>(t0, t1);
    let c1 = _mm256_shuffle_ps::<0xEE>(t0, t1);
    let c2 = _mm256_shuffle_ps::<0x44>(t2, t3);
    let c3 = _mm256_shuffle_ps::<0xEE>(t2, t3);
    // hsum's order: (u0 + u2) + (u1 + u3).
    _mm256_add_ps(_mm256_add_ps(c0, c2), _mm256_add_ps(c1, c3))
}

/// Dense f32 or f16 tile (`H` = weights are f16 bit patterns).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn dense_tile<const H: bool, const R: usize, const T: usize>(
    wf: &[f32], // [out, inp] (when !H)
    wh: &[u16], // [out, inp] (when H)
    inp: usize,
    x: &[f32], // [n, ld]
    ld: usize,
    r: usize,
    t: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
    ybase: usize,
) {
    let wlen = if H { wh.len() } else { wf.len() };
    assert!((r + R) * inp <= wlen && (t + T - 1) * ld + inp <= x.len());
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let full = inp / 8 * 8;
    let mut c = 0;
    while c < full {
        let mut wv = [_mm256_setzero_ps(); R];
        for (i, w) in wv.iter_mut().enumerate() {
            let o = (r + i) * inp + c;
            // SAFETY: o + 8 <= (r + R) * inp <= wlen (asserted) since c + 8 <= inp.
            *w = unsafe {
                if H {
                    _mm256_cvtph_ps(_mm_loadu_si128(wh.as_ptr().add(o) as *const __m128i))
                } else {
                    _mm256_loadu_ps(wf.as_ptr().add(o))
                }
            };
        }
        for j in 0..T {
            // SAFETY: (t + j) * ld + c + 8 <= (t + T - 1) * ld + inp <= x.len() (asserted).
            let xv = unsafe { _mm256_loadu_ps(x.as_ptr().add((t + j) * ld + c)) };
            for i in 0..R {
                acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
        c += 8;
    }
    if R * T == 8 {
        // 8 accumulators (8 rows × 1 token or 2 rows × 4 tokens): reduce them together.
        let a: [__m256; 8] = std::array::from_fn(|k| acc[k / T][k % T]);
        let mut sums = [0f32; 8];
        // SAFETY: `sums` holds 8 floats.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr(), hsum8(&a)) };
        for (k, mut s) in sums.into_iter().enumerate() {
            let (i, j) = (k / T, k % T);
            for cc in full..inp {
                let o = (r + i) * inp + cc;
                let wv = if H {
                    half::f16::from_bits(wh[o]).to_f32()
                } else {
                    wf[o]
                };
                s += wv * x[(t + j) * ld + cc];
            }
            y[(t + j) * ldy + r + i - ybase] = s;
        }
        return;
    }
    for i in 0..R {
        for j in 0..T {
            let mut s = hsum(acc[i][j]);
            for cc in full..inp {
                let o = (r + i) * inp + cc;
                let wv = if H {
                    half::f16::from_bits(wh[o]).to_f32()
                } else {
                    wf[o]
                };
                s += wv * x[(t + j) * ld + cc];
            }
            y[(t + j) * ldy + r + i - ybase] = s;
        }
    }
}

/// Dense f32 rows `r0..r1` (see [`crate::scalar::f32_rows`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn f32_rows(
    w: &[f32],
    inp: usize,
    x: &[f32],
    ld: usize,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32],
    ldy: usize,
) {
    drive!(
        dense_tile,
        [false],
        8,
        2,
        n,
        r0,
        r1,
        (w, &[], inp, x, ld),
        y,
        ldy
    );
}

/// Dense f16 rows `r0..r1`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn f16_rows(
    w: &[u16],
    inp: usize,
    x: &[f32],
    ld: usize,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32],
    ldy: usize,
) {
    drive!(
        dense_tile,
        [true],
        8,
        2,
        n,
        r0,
        r1,
        (&[], w, inp, x, ld),
        y,
        ldy
    );
}
