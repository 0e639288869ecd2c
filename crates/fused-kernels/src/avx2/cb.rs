//! AVX2 codebook tiles (`crate::codebook`): 8 nibble codes at a time are spread to 32-bit lanes
//! (`vpshufb` + `vpmovzxbd` + `vpsrlvd`) and decoded by a table lookup in registers —
//! `vpermps` on the 8-entry half of the F32 codebook (2- and 3-bit codes), plus a second
//! `vpermps` and a blend on bit 3 for 16 levels — then multiplied into F32 activations by FMA.
//! A group's tail of fewer than 8 elements is decoded one by one, as the scalar reference does.
//!
//! Each token's sums are the same operations whatever the tile height, so prefill and decode give a
//! token the same bits; they differ from the scalar reference only in summation order.
//!
//! `avx512_cb` mirrors this driver line for line on purpose (per-ISA intrinsics; see there).

use super::hsum;
use crate::codebook::CbRepr;
use std::arch::x86_64::*;

/// `y[t, r]` for tokens `0..n`, rows `r0..r1` (float activations `[n, ld]`, unpadded).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn cb_rows(
    q: &CbRepr,
    inp: usize,
    x: &[f32], // [n, ld]
    ld: usize,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    let mut t = 0;
    while t + 4 <= n {
        for r in r0..r1 {
            cb_tile::<4>(q, inp, x, ld, r, t, y, ldy, r0);
        }
        t += 4;
    }
    while t < n {
        for r in r0..r1 {
            cb_tile::<1>(q, inp, x, ld, r, t, y, ldy, r0);
        }
        t += 1;
    }
}

/// The 8 levels of the nibble codes in `b` (4 bytes, low nibble first).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn decode8<const WIDE: bool>(b: u32, tlo: __m256, thi: __m256) -> __m256 {
    let spread = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, -1, -1, -1, -1, -1, -1, -1, -1);
    let bytes = _mm256_cvtepu8_epi32(_mm_shuffle_epi8(_mm_cvtsi32_si128(b as i32), spread));
    let shifts = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
    let idx = _mm256_and_si256(_mm256_srlv_epi32(bytes, shifts), _mm256_set1_epi32(0xF));
    let lo = _mm256_permutevar8x32_ps(tlo, idx);
    if WIDE {
        let hi = _mm256_permutevar8x32_ps(thi, idx);
        // Bit 3 of the code moved to the sign bit selects the upper half of the table.
        _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx)))
    } else {
        lo
    }
}

/// One row × `T` tokens.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn cb_tile<const T: usize>(
    q: &CbRepr,
    inp: usize,
    x: &[f32], // [n, ld]
    ld: usize,
    r: usize,
    t: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
    ybase: usize,
) {
    if q.bits == 4 {
        cb_tile_w::<T, true>(q, inp, x, ld, r, t, y, ldy, ybase)
    } else {
        cb_tile_w::<T, false>(q, inp, x, ld, r, t, y, ldy, ybase)
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn cb_tile_w<const T: usize, const WIDE: bool>(
    q: &CbRepr,
    inp: usize,
    x: &[f32], // [n, ld]
    ld: usize,
    r: usize,
    t: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
    ybase: usize,
) {
    // SAFETY: `table` is 16 f32s; both loads read 8 of them.
    let (tlo, thi) = unsafe {
        (
            _mm256_loadu_ps(q.table.as_ptr()),
            _mm256_loadu_ps(q.table.as_ptr().add(8)),
        )
    };
    let row = &q.codes[r * q.row_bytes..(r + 1) * q.row_bytes];
    let xs: [&[f32]; T] = std::array::from_fn(|j| &x[(t + j) * ld..(t + j) * ld + inp]);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut tail = [0f32; T];
    for g in 0..q.n_groups {
        let len = q.group_len(g, inp);
        let (gc, c0) = (&row[g * q.gb..(g + 1) * q.gb], g * q.group);
        let s = q.scales[r * q.n_groups + g];
        let mut part = [_mm256_setzero_ps(); T];
        let mut j = 0;
        while j + 8 <= len {
            let b = u32::from_le_bytes([gc[j / 2], gc[j / 2 + 1], gc[j / 2 + 2], gc[j / 2 + 3]]);
            let w = decode8::<WIDE>(b, tlo, thi);
            for k in 0..T {
                let xv = &xs[k][c0 + j..c0 + j + 8];
                // SAFETY: `xv` holds exactly 8 floats.
                let xv = unsafe { _mm256_loadu_ps(xv.as_ptr()) };
                part[k] = _mm256_fmadd_ps(w, xv, part[k]);
            }
            j += 8;
        }
        let mut rest = [0f32; T];
        for jj in j..len {
            let l = q.table[q.code(r, g, jj) as usize];
            for k in 0..T {
                rest[k] += l * xs[k][c0 + jj];
            }
        }
        let sv = _mm256_set1_ps(s);
        for k in 0..T {
            acc[k] = _mm256_fmadd_ps(sv, part[k], acc[k]);
            tail[k] += s * rest[k];
        }
    }
    for k in 0..T {
        y[(t + k) * ldy + r - ybase] = hsum(acc[k]) + tail[k];
    }
}
