//! AVX-512 codebook tiles (`crate::codebook`): the whole 16-entry F32 codebook sits in one zmm
//! register, so 16 nibble codes (8 bytes, spread by `vpshufb` + `vpmovzxbd` + `vpsrlvd`) decode
//! with a single `vpermps` (`_mm512_permutexvar_ps`) — no blend, whatever the width (2- and
//! 3-bit codes index the first 4 or 8 entries). A group's tail of fewer than 16 elements is
//! decoded one by one, as the scalar reference does.
//!
//! Tiles are `R` rows × `T` tokens (`crate::avx2::drive`: 4 rows × 1 token in decode, 2 rows ×
//! 4 tokens in prefill), so the rows' independent chains overlap and an activation load serves
//! `R` rows. Each (row, token) sum is the same operations whatever the tile shape, so prefill and
//! decode give a token the same bits; they differ from the scalar reference only in summation
//! order.
//!
//! The tile driver mirrors `avx2::cb` line for line on purpose (16 lanes instead of 8): the
//! intrinsics differ per ISA, so a shared generic would hide the instruction choice.

use crate::avx2::drive;
use crate::codebook::CbRepr;
use std::arch::x86_64::*;

/// `y[t, r]` for tokens `0..n`, rows `r0..r1` (float activations `[n, ld]`, unpadded).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
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
    drive!(cb_tile, [], 4, 2, n, r0, r1, (q, inp, x, ld), y, ldy);
}

/// The 16 levels of the nibble codes in `b` (8 bytes, low nibble first).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn decode16(b: u64, table: __m512) -> __m512 {
    let spread = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let bytes = _mm512_cvtepu8_epi32(_mm_shuffle_epi8(_mm_cvtsi64_si128(b as i64), spread));
    let shifts = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
    let idx = _mm512_and_si512(_mm512_srlv_epi32(bytes, shifts), _mm512_set1_epi32(0xF));
    _mm512_permutexvar_ps(idx, table)
}

/// `R` rows `r..r+R` × `T` tokens `t..t+T`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn cb_tile<const R: usize, const T: usize>(
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
    // SAFETY: `table` is exactly 16 f32s.
    let table = unsafe { _mm512_loadu_ps(q.table.as_ptr()) };
    let rows: [&[u8]; R] =
        std::array::from_fn(|i| &q.codes[(r + i) * q.row_bytes..(r + i + 1) * q.row_bytes]);
    let xs: [&[f32]; T] = std::array::from_fn(|k| &x[(t + k) * ld..(t + k) * ld + inp]);
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut tail = [[0f32; T]; R];
    for g in 0..q.n_groups {
        let len = q.group_len(g, inp);
        let c0 = g * q.group;
        let mut part = [[_mm512_setzero_ps(); T]; R];
        let mut j = 0;
        while j + 16 <= len {
            let xv: [__m512; T] = std::array::from_fn(|k| {
                let xv = &xs[k][c0 + j..c0 + j + 16];
                // SAFETY: `xv` holds exactly 16 floats.
                unsafe { _mm512_loadu_ps(xv.as_ptr()) }
            });
            for i in 0..R {
                let o = g * q.gb + j / 2;
                let bytes: [u8; 8] = rows[i][o..o + 8].try_into().expect("8 bytes");
                let w = decode16(u64::from_le_bytes(bytes), table);
                for k in 0..T {
                    part[i][k] = _mm512_fmadd_ps(w, xv[k], part[i][k]);
                }
            }
            j += 16;
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
            let sv = _mm512_set1_ps(s);
            for k in 0..T {
                acc[i][k] = _mm512_fmadd_ps(sv, part[i][k], acc[i][k]);
                tail[i][k] += s * rest[k];
            }
        }
    }
    for i in 0..R {
        for k in 0..T {
            y[(t + k) * ldy + r + i - ybase] = _mm512_reduce_add_ps(acc[i][k]) + tail[i][k];
        }
    }
}
