//! AVX-512 (F/BW/VL) kernels, plus VNNI (`vpdpbusd`) for int8 activations.
//!
//! Same tiling as [`crate::avx2`], 16 lanes wide; dense tails use masked loads.
//! The int8-activation kernel uses the 256-bit VNNI form (one 32-element chunk
//! per instruction) so it shares the chunk layout with the AVX2 path.
//!
//! Its bodies mirror `avx2` line for line on purpose (16 lanes and masks instead of 8): the
//! intrinsics differ per ISA, so a shared generic would hide the instruction choice.

use crate::avx2::{check_tile, drive, finish_q8};
use crate::pack::{CHUNK, QuantRepr};
use std::arch::x86_64::*;

/// Dense f32 or f16 tile (`H` = weights are f16 bit patterns).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut c = 0;
    while c < inp {
        let rem = (inp - c).min(16);
        let m: __mmask16 = if rem == 16 { 0xFFFF } else { (1u16 << rem) - 1 };
        let mut wv = [_mm512_setzero_ps(); R];
        for (i, w) in wv.iter_mut().enumerate() {
            let o = (r + i) * inp + c;
            // SAFETY: masked loads touch only lanes < rem, i.e. elements o..o+rem of
            // row r+i, which are in bounds ((r + R) * inp <= wlen, asserted).
            *w = unsafe {
                if H {
                    _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(
                        m,
                        wh.as_ptr().add(o) as *const i16,
                    ))
                } else {
                    _mm512_maskz_loadu_ps(m, wf.as_ptr().add(o))
                }
            };
        }
        for j in 0..T {
            // SAFETY: lanes < rem of token t+j's row are in bounds (asserted above).
            let xv = unsafe { _mm512_maskz_loadu_ps(m, x.as_ptr().add((t + j) * ld + c)) };
            for i in 0..R {
                acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
        c += 16;
    }
    for i in 0..R {
        for j in 0..T {
            y[(t + j) * ldy + r + i - ybase] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}

/// Dense f32 rows `r0..r1` (see [`crate::scalar::f32_rows`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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

/// The 32 unsigned codes of chunk `ch` of `row` as two 16-byte halves.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn chunk_halves<const B: usize>(q: &QuantRepr, row: usize, ch: usize) -> (__m128i, __m128i) {
    let off = row * q.row_bytes + ch * CHUNK * B / 8;
    assert!(off + CHUNK * B / 8 <= q.codes.len());
    // SAFETY: the chunk's CHUNK*B/8 bytes are in bounds (asserted above).
    unsafe {
        let p = q.codes.as_ptr().add(off) as *const __m128i;
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

/// Quantized weight × float activation tile, 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
    let (ng, cpg) = (q.n_groups, q.gp / CHUNK);
    assert!(ng * q.gp <= ld && (t + T) * ld <= x.len() && (r + R) * ng <= q.scales.len());
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    for g in 0..ng {
        let mut s = [_mm512_setzero_ps(); R];
        let mut zs = [_mm512_setzero_ps(); R];
        for i in 0..R {
            s[i] = _mm512_set1_ps(q.scales[(r + i) * ng + g]);
            zs[i] = _mm512_set1_ps(q.zs[(r + i) * ng + g]);
        }
        for ch in g * cpg..(g + 1) * cpg {
            let mut halves = [(_mm_setzero_si128(), _mm_setzero_si128()); R];
            for (i, h) in halves.iter_mut().enumerate() {
                *h = chunk_halves::<B>(q, r + i, ch);
            }
            for k in 0..2 {
                let mut wv = [_mm512_setzero_ps(); R];
                for i in 0..R {
                    let h = if k == 0 { halves[i].0 } else { halves[i].1 };
                    let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(h));
                    wv[i] = _mm512_fmsub_ps(f, s[i], zs[i]);
                }
                let xo = ch * CHUNK + 16 * k;
                for j in 0..T {
                    // SAFETY: xo + 16 <= ng * gp <= ld and (t + j + 1) * ld <= x.len() (asserted).
                    let xv = unsafe { _mm512_loadu_ps(x.as_ptr().add((t + j) * ld + xo)) };
                    for i in 0..R {
                        acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
                    }
                }
            }
        }
    }
    for i in 0..R {
        for j in 0..T {
            y[(t + j) * ldy + r + i - ybase] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
}

/// Quantized rows × float activations (see [`crate::scalar::qf_rows`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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

/// Quantized weight × int8 activation tile using `vpdpbusd` (u8 codes × i8
/// activations, exact i32 accumulation per group).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
    let (ng, cpg) = (q.n_groups, q.gp / CHUNK);
    assert!(ng * q.gp <= ld && (t + T) * ld <= xq.len() && (t + T) * ng <= a.len());
    assert!((t + T) * ng <= b.len() && (r + R) * ng <= q.scales.len());
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for g in 0..ng {
        let mut isum = [[_mm256_setzero_si256(); T]; R];
        for ch in g * cpg..(g + 1) * cpg {
            let mut wv = [_mm256_setzero_si256(); R];
            for (i, w) in wv.iter_mut().enumerate() {
                let (lo, hi) = chunk_halves::<B>(q, r + i, ch);
                *w = _mm256_set_m128i(hi, lo);
            }
            for j in 0..T {
                // SAFETY: 32 bytes at ch * CHUNK <= ng * gp - 32 of token t+j's row,
                // (t + j + 1) * ld <= xq.len() (asserted).
                let xv = unsafe {
                    _mm256_loadu_si256(xq.as_ptr().add((t + j) * ld + ch * CHUNK) as *const __m256i)
                };
                for i in 0..R {
                    isum[i][j] = _mm256_dpbusd_epi32(isum[i][j], wv[i], xv);
                }
            }
        }
        for i in 0..R {
            let s = q.scales[(r + i) * ng + g];
            for j in 0..T {
                let sa = _mm256_set1_ps(s * a[(t + j) * ng + g]);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), sa, acc[i][j]);
            }
        }
    }
    finish_q8::<R, T>(q, b, &acc, r, t, y, ldy, ybase);
}

/// INT4 × int8 activation tile with VNNI over 2-chunk blocks (same block
/// layout and lane/scale scheme as [`crate::avx2`]'s `q4_tile`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    // SAFETY: block p reads bytes 32p..32p+32 of row r+i of `codes`, activations
    // 64p..64p+64 <= ld of token t+j and entries g0, g1 < ng of the scale / `a`
    // rows (check_tile and the asserts above).
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
        let (mut g, mut k) = (0usize, 0usize);
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
                    let isum = _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, xl);
                    let isum = _mm256_dpbusd_epi32(isum, hi, xh);
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

/// Quantized rows × int8 activations via VNNI (see [`crate::scalar::q8_rows`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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
