//! Row-interleaved INT4 layout for the AVX2 int8-activation GEMV
//! (`crate::avx2::q4il_rows`): 8 output rows share every 32-byte load, so a
//! row's dot product needs no horizontal sum and 8 outputs are stored at once
//! (the rows of the tiny models are 64–172 wide, where per-row reductions and
//! stores cost more than the dot products themselves).
//!
//! Layout, per block of [`IL_ROWS`] rows (the last block padded with zero-scale
//! rows) and per 32-element chunk `ch < n_groups · gp / 32` of the padded row:
//! 4 sub-steps `s` of 32 bytes, byte `4·j + m` holding row `j`'s code of
//! element `8s + m` (low nibble) and `8s + 4 + m` (high nibble), `m < 4`.
//! Scales and `z·s` are `[block, n_groups, 8]` f32.

use crate::pack::{CHUNK, QuantRepr};

/// Rows per interleaved block (one AVX2 register of f32 outputs).
pub(crate) const IL_ROWS: usize = 8;

/// Row-interleaved copy of an INT4 weight (see the module docs).
#[derive(Debug, Clone, Default)]
pub(crate) struct Interleaved {
    /// Bytes per row block: `chunks · 4 · 32`.
    pub block_bytes: usize,
    /// Chunks per row (groups × chunks per group, without the even-padding chunk).
    pub chunks: usize,
    /// `[blocks, block_bytes]` codes.
    pub codes: Vec<u8>,
    /// `[blocks, n_groups, 8]` scales (0 for padding rows).
    pub scales: Vec<f32>,
    /// `[blocks, n_groups, 8]` `z · s` (0 for padding rows).
    pub zs: Vec<f32>,
}

impl Interleaved {
    /// Builds the interleaved copy of an INT4 repr with `out` rows.
    pub fn build(q: &QuantRepr, out: usize) -> Interleaved {
        debug_assert_eq!(q.bits, 4);
        let chunks = q.n_groups * q.gp / CHUNK;
        let blocks = out.div_ceil(IL_ROWS);
        let block_bytes = chunks * 4 * 32;
        let ng = q.n_groups;
        let mut codes = vec![0u8; blocks * block_bytes];
        let mut scales = vec![0f32; blocks * ng * IL_ROWS];
        let mut zs = vec![0f32; blocks * ng * IL_ROWS];
        // Element `e` of padded row `r` (chunk layout: byte i = elements i | i+16 << 4).
        let code = |r: usize, e: usize| -> u8 {
            let (ch, i) = (e / CHUNK, e % CHUNK);
            let b = q.codes[r * q.row_bytes + ch * CHUNK / 2 + i % 16];
            if i < 16 { b & 0x0F } else { b >> 4 }
        };
        for r in 0..out {
            let (blk, j) = (r / IL_ROWS, r % IL_ROWS);
            let dst = &mut codes[blk * block_bytes..(blk + 1) * block_bytes];
            for ch in 0..chunks {
                for s in 0..4 {
                    for m in 0..4 {
                        let e = ch * CHUNK + 8 * s + m;
                        dst[(ch * 4 + s) * 32 + 4 * j + m] = code(r, e) | (code(r, e + 4) << 4);
                    }
                }
            }
            for g in 0..ng {
                let k = (blk * ng + g) * IL_ROWS + j;
                scales[k] = q.scales[r * ng + g];
                zs[k] = q.zs[r * ng + g];
            }
        }
        Interleaved {
            block_bytes,
            chunks,
            codes,
            scales,
            zs,
        }
    }
}
