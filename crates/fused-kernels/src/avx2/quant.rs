//! AVX2 quantized-weight tiles: float activations (dequantized in registers)
//! and int8 activations (`vpmaddubsw` / `vpmaddwd` integer dots).
//!
//! Float- and int8-activation tiles repeat the load/unpack prologue on purpose: the dot differs
//! (FMA vs integer madd), and each stays a straight-line register tile.

use super::{drive, hsum};
use crate::pack::{CHUNK, QuantRepr};
use std::arch::x86_64::*;

/// Codes of one 32-element chunk at `p` as two 16-byte halves (elements
/// 0..16 and 16..32).
///
/// # Safety
/// `p` must point at `CHUNK * B / 8` readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn halves_at<const B: usize>(p: *const u8) -> (__m128i, __m128i) {
    // SAFETY: guaranteed by the caller (see above).
    unsafe {
        let p = p as *const __m128i;
        if B == 4 {
            let v = _mm_loadu_si128(p);
            let m = _mm_set1_epi8(0x0F);
            (
                _mm_and_si128(v, m),
                _mm_and_si128(_mm_srli_epi16::<4>(v), m),
            )
        } else {
            (_mm_loadu_si128(p), _mm_loadu_si128(p.add(1)))
        }
    }
}

/// Asserts the bounds every quantized tile relies on for its unchecked loads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_tile<X>(
    q: &QuantRepr,
    x: &[X],
    ld: usize,
    r: usize,
    rr: usize,
    t: usize,
    tt: usize,
) {
    let ng = q.n_groups;
    assert!(q.gp.is_multiple_of(CHUNK) && q.row_chunks * CHUNK >= ng * q.gp);
    assert!(q.row_bytes * 8 == q.row_chunks * CHUNK * q.bits);
    assert!(q.row_chunks * CHUNK <= ld && (t + tt) * ld <= x.len());
    assert!((r + rr) * q.row_bytes <= q.codes.len() && (r + rr) * ng <= q.scales.len());
    assert!((r + rr) * ng <= q.zs.len());
}

/// Quantized weight × float activation tile (dequantized in registers).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn qf_tile<const B: usize, const R: usize, const T: usize>(
    q: &QuantRepr,
    x: &[f32], // [n, ld] padded
    ld: usize,
    r: usize,
    t: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
    ybase: usize,
) {
    let (ng, cpg, cb) = (q.n_groups, q.gp / CHUNK, CHUNK * B / 8);
    check_tile(q, x, ld, r, R, t, T);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    // SAFETY: pointers walk row r+i of `codes` (ng*cpg chunks of cb bytes =
    // row_bytes), ng entries of rows r+i of `scales`/`zs`, and the first
    // ng*gp <= ld floats of token t+j's row of `x`; all asserted by check_tile.
    unsafe {
        let mut wp = [q.codes.as_ptr(); R];
        let mut sp = [q.scales.as_ptr(); R];
        let mut zp = [q.zs.as_ptr(); R];
        for i in 0..R {
            wp[i] = wp[i].add((r + i) * q.row_bytes);
            sp[i] = sp[i].add((r + i) * ng);
            zp[i] = zp[i].add((r + i) * ng);
        }
        let mut xp = [x.as_ptr(); T];
        for (j, p) in xp.iter_mut().enumerate() {
            *p = p.add((t + j) * ld);
        }
        for g in 0..ng {
            let mut s = [_mm256_setzero_ps(); R];
            let mut zs = [_mm256_setzero_ps(); R];
            for i in 0..R {
                s[i] = _mm256_broadcast_ss(&*sp[i].add(g));
                zs[i] = _mm256_broadcast_ss(&*zp[i].add(g));
            }
            for _ in 0..cpg {
                let mut halves = [(_mm_setzero_si128(), _mm_setzero_si128()); R];
                for i in 0..R {
                    halves[i] = halves_at::<B>(wp[i]);
                    wp[i] = wp[i].add(cb);
                }
                for k in 0..4 {
                    let mut wv = [_mm256_setzero_ps(); R];
                    for i in 0..R {
                        let h = if k < 2 { halves[i].0 } else { halves[i].1 };
                        let h = if k % 2 == 1 {
                            _mm_srli_si128::<8>(h)
                        } else {
                            h
                        };
                        let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(h));
                        wv[i] = _mm256_fmsub_ps(f, s[i], zs[i]);
                    }
                    for j in 0..T {
                        let xv = _mm256_loadu_ps(xp[j].add(8 * k));
                        for i in 0..R {
                            acc[i][j] = _mm256_fmadd_ps(wv[i], xv, acc[i][j]);
                        }
                    }
                }
                for p in xp.iter_mut() {
                    *p = p.add(CHUNK);
                }
            }
        }
    }
    for i in 0..R {
        for j in 0..T {
            y[(t + j) * ldy + r + i - ybase] = hsum(acc[i][j]);
        }
    }
}

/// Quantized rows × float activations (see [`crate::scalar::qf_rows`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn qf_rows(
    q: &QuantRepr,
    x: &[f32],
    ld: usize,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32],
    ldy: usize,
) {
    if q.bits == 4 {
        drive!(qf_tile, [4], 4, 2, n, r0, r1, (q, x, ld), y, ldy);
    } else {
        drive!(qf_tile, [8], 4, 2, n, r0, r1, (q, x, ld), y, ldy);
    }
}

/// Quantized weight × int8 activation tile: exact i32 dot per group, then
/// `acc += (s·a) · isum`; zero points are removed with the precomputed
/// `a · Σ xq` term at the end.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn q8_tile<const B: usize, const R: usize, const T: usize>(
    q: &QuantRepr,
    xq: &[i8], // [n, ld]
    ld: usize,
    a: &[f32], // [n, ng]
    b: &[f32], // [n, ng]
    r: usize,
    t: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
    ybase: usize,
) {
    let (ng, cpg, cb) = (q.n_groups, q.gp / CHUNK, CHUNK * B / 8);
    check_tile(q, xq, ld, r, R, t, T);
    assert!((t + T) * ng <= a.len() && (t + T) * ng <= b.len());
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    // SAFETY: as in qf_tile (check_tile), plus ng entries of rows t+j of `a`
    // (asserted above).
    unsafe {
        let mut wp = [q.codes.as_ptr(); R];
        let mut sp = [q.scales.as_ptr(); R];
        for i in 0..R {
            wp[i] = wp[i].add((r + i) * q.row_bytes);
            sp[i] = sp[i].add((r + i) * ng);
        }
        let mut xp = [xq.as_ptr(); T];
        let mut ap = [a.as_ptr(); T];
        for j in 0..T {
            xp[j] = xp[j].add((t + j) * ld);
            ap[j] = ap[j].add((t + j) * ng);
        }
        for g in 0..ng {
            let mut isum = [[_mm256_setzero_si256(); T]; R];
            for _ in 0..cpg {
                {
                    let mut wv = [(_mm256_setzero_si256(), _mm256_setzero_si256()); R];
                    for i in 0..R {
                        let p = wp[i] as *const __m128i;
                        wv[i] = (
                            _mm256_cvtepu8_epi16(_mm_loadu_si128(p)),
                            _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(1))),
                        );
                        wp[i] = wp[i].add(cb);
                    }
                    for j in 0..T {
                        let p = xp[j] as *const __m128i;
                        let xl = _mm256_cvtepi8_epi16(_mm_loadu_si128(p));
                        let xh = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(1)));
                        for i in 0..R {
                            let p = _mm256_add_epi32(
                                _mm256_madd_epi16(wv[i].0, xl),
                                _mm256_madd_epi16(wv[i].1, xh),
                            );
                            isum[i][j] = _mm256_add_epi32(isum[i][j], p);
                        }
                    }
                }
                for p in xp.iter_mut() {
                    *p = p.add(CHUNK);
                }
            }
            for i in 0..R {
                let s = _mm256_broadcast_ss(&*sp[i].add(g));
                for j in 0..T {
                    let sa = _mm256_mul_ps(s, _mm256_broadcast_ss(&*ap[j].add(g)));
                    acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), sa, acc[i][j]);
                }
            }
        }
    }
    finish_q8::<R, T>(q, b, &acc, r, t, y, ldy, ybase);
}

/// INT4 × int8 activation tile over 2-chunk blocks: one 32-byte load gives
/// 64 nibbles; low nibbles pair with activations `[c0 0..16, c1 0..16]`, high
/// nibbles with `[c0 16..32, c1 16..32]` (see [`QuantRepr::q8_pos`]). Lanes
/// 0..4 of the i32 sums belong to chunk `c0`, lanes 4..8 to `c1`, so the scale
/// vector is `[s·a of c0's group ×4, s·a of c1's group ×4]`. The zero-point
/// correction `Σ_g z_g·s_g·b_g` is folded into the accumulator 8 groups at a time.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn q4_tile<const R: usize, const T: usize>(
    q: &QuantRepr,
    xq: &[i8], // [n, ld], ld = row_chunks * CHUNK (block-permuted)
    ld: usize,
    a: &[f32], // [n, ng]
    b: &[f32], // [n, ng]
    r: usize,
    t: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
    ybase: usize,
) {
    let (ng, cpg) = (q.n_groups, q.gp / CHUNK);
    check_tile(q, xq, ld, r, R, t, T);
    assert!(q.bits == 4 && q.row_chunks.is_multiple_of(2));
    assert!((t + T) * ng <= a.len() && (t + T) * ng <= b.len());
    let m = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    // SAFETY: block p reads bytes 32p..32p+32 of row r+i of `codes` (row_bytes =
    // 16 * row_chunks, 2p+1 < row_chunks), activations 64p..64p+64 <= ld of token
    // t+j, and entries g0, g1 < ng of the scale / `a` rows; see check_tile and the
    // asserts above.
    unsafe {
        let mut wp = [q.codes.as_ptr(); R];
        let mut sp = [q.scales.as_ptr(); R];
        for i in 0..R {
            wp[i] = wp[i].add((r + i) * q.row_bytes);
            sp[i] = sp[i].add((r + i) * ng);
        }
        let mut xp = [xq.as_ptr(); T];
        let mut ap = [a.as_ptr(); T];
        for j in 0..T {
            xp[j] = xp[j].add((t + j) * ld);
            ap[j] = ap[j].add((t + j) * ng);
        }
        let (mut g, mut k) = (0usize, 0usize); // group and chunk-in-group of chunk 2p
        for _ in 0..q.row_chunks / 2 {
            let g0 = g;
            k += 1;
            if k == cpg {
                (g, k) = (g + 1, 0);
            }
            let g1 = g.min(ng - 1);
            k += 1;
            if k == cpg {
                (g, k) = (g + 1, 0);
            }
            let mut al = [_mm256_setzero_ps(); T];
            for j in 0..T {
                al[j] = _mm256_set_m128(
                    _mm_broadcast_ss(&*ap[j].add(g1)),
                    _mm_broadcast_ss(&*ap[j].add(g0)),
                );
            }
            for i in 0..R {
                let v = _mm256_loadu_si256(wp[i] as *const __m256i);
                wp[i] = wp[i].add(32);
                let lo = _mm256_and_si256(v, m);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m);
                let sl = _mm256_set_m128(
                    _mm_broadcast_ss(&*sp[i].add(g1)),
                    _mm_broadcast_ss(&*sp[i].add(g0)),
                );
                for j in 0..T {
                    let xl = _mm256_loadu_si256(xp[j] as *const __m256i);
                    let xh = _mm256_loadu_si256(xp[j].add(32) as *const __m256i);
                    let s16 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo, xl),
                        _mm256_maddubs_epi16(hi, xh),
                    );
                    let isum = _mm256_madd_epi16(s16, ones);
                    acc[i][j] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(isum),
                        _mm256_mul_ps(sl, al[j]),
                        acc[i][j],
                    );
                }
            }
            for p in xp.iter_mut() {
                *p = p.add(2 * CHUNK);
            }
        }
    }
    finish_q8::<R, T>(q, b, &acc, r, t, y, ldy, ybase);
}

/// Subtracts the zero-point term `Σ_g zs_g · b_g` (8 groups per FMA) and stores.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_q8<const R: usize, const T: usize>(
    q: &QuantRepr,
    b: &[f32], // [n, ng]
    acc: &[[__m256; T]; R],
    r: usize,
    t: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
    ybase: usize,
) {
    let ng = q.n_groups;
    let full = ng / 8 * 8;
    for i in 0..R {
        let zs = &q.zs[(r + i) * ng..(r + i + 1) * ng];
        for j in 0..T {
            let bt = &b[(t + j) * ng..(t + j + 1) * ng];
            let mut v = acc[i][j];
            for g in (0..full).step_by(8) {
                let (zv, bv) = (&zs[g..g + 8], &bt[g..g + 8]);
                // SAFETY: both slices have exactly 8 elements.
                let (zv, bv) =
                    unsafe { (_mm256_loadu_ps(zv.as_ptr()), _mm256_loadu_ps(bv.as_ptr())) };
                v = _mm256_fnmadd_ps(zv, bv, v);
            }
            let tail: f32 = zs[full..].iter().zip(&bt[full..]).map(|(z, b)| z * b).sum();
            y[(t + j) * ldy + r + i - ybase] = hsum(v) - tail;
        }
    }
}

/// Quantized rows × int8 activations (see [`crate::scalar::q8_rows`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn q8_rows(
    q: &QuantRepr,
    xq: &[i8],
    ld: usize,
    a: &[f32],
    b: &[f32],
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32],
    ldy: usize,
) {
    if q.bits == 4 {
        drive!(q4_tile, [], 4, 1, n, r0, r1, (q, xq, ld, a, b), y, ldy);
    } else {
        drive!(q8_tile, [8], 4, 1, n, r0, r1, (q, xq, ld, a, b), y, ldy);
    }
}
