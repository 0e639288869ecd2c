//! AVX2 codebook tiles (`crate::codebook`): 8 nibble codes at a time are spread to 32-bit lanes
//! (`vpshufb` + `vpmovzxbd` + `vpsrlvd`) and decoded by a table lookup in registers —
//! `vpermps` on the 8-entry half of the F32 codebook (2- and 3-bit codes), plus a second
//! `vpermps` and a blend on bit 3 for 16 levels — then multiplied into F32 activations by FMA.
//! A group's tail of fewer than 8 elements is decoded one by one, as the scalar reference does.
//!
//! Tiles are `R` rows × `T` tokens ([`super::drive`]: 4 rows × 1 token in decode, 1 row × 4
//! tokens in prefill — 16 ymm registers hold no more), so the rows' independent chains overlap.
//! Each (row, token) sum is the same operations whatever the tile shape, so prefill and decode
//! give a token the same bits; they differ from the scalar reference only in summation order.
//!
//! `avx512_cb` mirrors this driver line for line on purpose (per-ISA intrinsics; see there).

use super::{drive, hsum};
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
    if q.bits == 4 {
        drive!(cb_tile, [true], 4, 1, n, r0, r1, (q, inp, x, ld), y, ldy);
    } else {
        drive!(cb_tile, [false], 4, 1, n, r0, r1, (q, inp, x, ld), y, ldy);
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

/// `R` rows `r..r+R` × `T` tokens `t..t+T`; `WIDE` for 16-level tables.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn cb_tile<const WIDE: bool, const R: usize, const T: usize>(
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
    let rows: [&[u8]; R] =
        std::array::from_fn(|i| &q.codes[(r + i) * q.row_bytes..(r + i + 1) * q.row_bytes]);
    let xs: [&[f32]; T] = std::array::from_fn(|k| &x[(t + k) * ld..(t + k) * ld + inp]);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut tail = [[0f32; T]; R];
    for g in 0..q.n_groups {
        let len = q.group_len(g, inp);
        let c0 = g * q.group;
        let mut part = [[_mm256_setzero_ps(); T]; R];
        let mut j = 0;
        while j + 8 <= len {
            let xv: [__m256; T] = std::array::from_fn(|k| {
                let xv = &xs[k][c0 + j..c0 + j + 8];
                // SAFETY: `xv` holds exactly 8 floats.
                unsafe { _mm256_loadu_ps(xv.as_ptr()) }
            });
            for i in 0..R {
                let o = g * q.gb + j / 2;
                let b: [u8; 4] = rows[i][o..o + 4].try_into().expect("4 bytes");
                let w = decode8::<WIDE>(u32::from_le_bytes(b), tlo, thi);
                for k in 0..T {
                    part[i][k] = _mm256_fmadd_ps(w, xv[k], part[i][k]);
                }
            }
            j += 8;
        }
        for i in 0..R {
            let mut rest = [0f32; T];
            for jj in j..len {
                let l = q.table[q.code(r + i, g, jj) as usize];
                for k in 0..T {
                    rest[k] += l * xs[k][c0 + jj];
                }
            }
            let s = q.scales[(r + i) * q.n_groups + g];
            let sv = _mm256_set1_ps(s);
            for k in 0..T {
                acc[i][k] = _mm256_fmadd_ps(sv, part[i][k], acc[i][k]);
                tail[i][k] += s * rest[k];
            }
        }
    }
    for i in 0..R {
        for k in 0..T {
            y[(t + k) * ldy + r + i - ybase] = hsum(acc[i][k]) + tail[i][k];
        }
    }
}
