//! Codebook weights (`squish_core::codebook`): 2/3/4-bit codes into a per-tensor table of
//! levels, F16 group scales. `w[r, c] = s[r, c / g] · levels[code(r, c)]`.
//!
//! Kernel layout ([`CbRepr`]): whatever the stored width, every code becomes a nibble; each group
//! of a row starts on a byte boundary (`gb = ⌈group / 2⌉` bytes per group, element `j` of a group
//! in byte `j / 2`, low nibble first), so 8 codes are one aligned-to-group 4-byte read. The table
//! is 16 F32 entries (unused entries 0 for 2- and 3-bit codes) and decoding is a table lookup in
//! registers on the SIMD paths. Activations stay F32 and are read unpadded (`ld = inp`).
//!
//! Int8 activations ([`crate::Activations::Int8`]) run on an int8 form of the same weight
//! ([`CbRepr::q8`]): the levels rounded to int8 once per tensor (`l_k = round(L_k / δ)`,
//! `δ = max|L| / 127`), stored as unsigned `u_k = l_k + 128` in a 16-byte table, the nibble
//! codes in the INT4 row-interleaved layout, group scales `s·δ` and zero point 128. The INT4
//! integer kernels (`avx2::q4il`) decode a nibble through the table in registers (`vpshufb`)
//! and keep their exact integer sums, so every x86 path gives the scalar path's bits.
//!
//! The scalar kernel here is the reference: per (row, group) `Σ_j levels[code_j] · x_j` in column
//! order, times the group scale, summed over groups in order — the same arithmetic as
//! `squish_core::codebook::CbTensor::vec_dot`, so the runtime's scalar path equals the format's
//! reference bit for bit.

use half::f16;
use squish_core::codebook::{check_levels, row_bytes, unpack_code};

use crate::error::{KernelError, Result, check_len};
use crate::pack::{PackedWeight, QuantFormat, QuantRepr, RawWeight, Repr, check_dims};

/// Borrowed codebook parts exactly as stored in a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct CodebookParts<'a> {
    /// Bits per code (2, 3 or 4).
    pub bits: u32,
    /// Output channels (rows).
    pub out: usize,
    /// Input features (columns).
    pub inp: usize,
    /// Group size along `inp` (the last group may be short).
    pub group: usize,
    /// Densely packed codes `[out, ⌈inp·bits/8⌉]` (LSB first, rows byte-aligned).
    pub codes: &'a [u8],
    /// Scales `[out, n_groups]`.
    pub scales: &'a [f16],
    /// The codebook, `2^bits` finite non-decreasing levels.
    pub levels: &'a [f32],
}

/// Repacked codebook weight (kernel layout, see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct CbRepr {
    /// Stored code width (2, 3 or 4), kept for [`PackedWeight::to_raw`].
    pub bits: u32,
    pub group: usize,
    pub n_groups: usize,
    /// Bytes per group in `codes`: `⌈group / 2⌉`.
    pub gb: usize,
    /// Bytes per row in `codes`: `n_groups · gb`.
    pub row_bytes: usize,
    /// `[out, row_bytes]` nibble codes, groups byte-aligned.
    pub codes: Vec<u8>,
    /// `[out, n_groups]` f32 scales.
    pub scales: Vec<f32>,
    /// The table, padded with zeros to 16 entries.
    pub table: [f32; 16],
    /// The int8-activation form (see the module docs).
    pub q8: QuantRepr,
}

/// The levels rounded to int8 under one step `δ = max|L| / 127` (1 for an all-zero table),
/// as unsigned codes `l + 128` (unused entries 128, i.e. zero): `(table, δ)`.
pub(crate) fn int8_levels(levels: &[f32]) -> ([u8; 16], f32) {
    let amax = levels.iter().fold(0f32, |m, l| m.max(l.abs()));
    let delta = if amax > 0.0 { amax / 127.0 } else { 1.0 };
    let mut lut = [128u8; 16];
    for (u, l) in lut.iter_mut().zip(levels) {
        *u = ((l / delta).round().clamp(-127.0, 127.0) as i32 + 128) as u8;
    }
    (lut, delta)
}

impl CbRepr {
    /// Code of element `j` of group `g` of row `r`.
    #[inline]
    pub fn code(&self, r: usize, g: usize, j: usize) -> u8 {
        let b = self.codes[r * self.row_bytes + g * self.gb + j / 2];
        if j.is_multiple_of(2) { b & 0xF } else { b >> 4 }
    }

    /// Length of group `g` of a row of `inp` columns.
    #[inline]
    pub fn group_len(&self, g: usize, inp: usize) -> usize {
        self.group.min(inp - g * self.group)
    }
}

impl PackedWeight {
    /// Validates checkpoint codebook parts and repacks them (any width, short last group).
    pub fn from_codebook(p: CodebookParts<'_>) -> Result<Self> {
        let CodebookParts {
            bits,
            out,
            inp,
            group,
            codes,
            scales,
            levels,
        } = p;
        check_dims(out, inp)?;
        if group == 0 || group > inp {
            return Err(KernelError::Group(group));
        }
        check_levels(bits, levels).map_err(|e| KernelError::Incompatible(e.to_string()))?;
        let n_groups = inp.div_ceil(group);
        let rrb = row_bytes(bits, inp);
        check_len("codes", out * rrb, codes.len())?;
        check_len("scales", out * n_groups, scales.len())?;
        if let Some(i) = scales.iter().position(|s| !s.to_f32().is_finite()) {
            return Err(KernelError::NonFiniteScale(i));
        }
        let gb = group.div_ceil(2);
        let row_bytes = n_groups * gb;
        let mut packed = vec![0u8; out * row_bytes]; // [out, row_bytes]
        for r in 0..out {
            let raw = &codes[r * rrb..(r + 1) * rrb];
            let dst = &mut packed[r * row_bytes..(r + 1) * row_bytes];
            for c in 0..inp {
                let (g, j) = (c / group, c % group);
                dst[g * gb + j / 2] |= unpack_code(bits, raw, c) << (4 * (j % 2));
            }
        }
        let mut table = [0f32; 16];
        table[..levels.len()].copy_from_slice(levels);
        let scales: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect();
        let (lut, delta) = int8_levels(levels);
        let q8 = QuantRepr::build(
            QuantFormat::Int4Asym,
            out,
            inp,
            group,
            scales.iter().map(|s| s * delta).collect(),
            vec![128; scales.len()],
            Some(lut),
            |r, c| unpack_code(bits, &codes[r * rrb..(r + 1) * rrb], c),
        );
        let repr = CbRepr {
            bits,
            group,
            n_groups,
            gb,
            row_bytes,
            codes: packed,
            scales,
            table,
            q8,
        };
        Ok(PackedWeight {
            out,
            inp,
            repr: Repr::Codebook(Box::new(repr)),
        })
    }
}

impl CbRepr {
    /// The checkpoint-layout parts (exact round trip of [`PackedWeight::from_codebook`]).
    pub(crate) fn to_raw(&self, out: usize, inp: usize) -> RawWeight {
        let rrb = row_bytes(self.bits, inp);
        let mut codes = vec![0u8; out * rrb]; // [out, rrb]
        for r in 0..out {
            let row: Vec<u8> = (0..inp)
                .map(|c| self.code(r, c / self.group, c % self.group))
                .collect();
            squish_core::codebook::pack_row(self.bits, &row, &mut codes[r * rrb..(r + 1) * rrb]);
        }
        RawWeight::Codebook {
            bits: self.bits,
            group: self.group,
            codes,
            scales: self.scales.iter().map(|s| f16::from_f32(*s)).collect(),
            levels: self.table[..1 << self.bits].to_vec(),
        }
    }

    /// Dequantized value of element `(r, c)`.
    pub(crate) fn get(&self, r: usize, c: usize) -> f32 {
        let (g, j) = (c / self.group, c % self.group);
        self.scales[r * self.n_groups + g] * self.table[self.code(r, g, j) as usize]
    }
}

/// Scalar reference: `y[t, r] = Σ_g s[r, g] · Σ_{j ∈ g} table[code] · x[t, g·group + j]`.
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
    for t in 0..n {
        let xt = &x[t * ld..t * ld + inp];
        for r in r0..r1 {
            let mut acc = 0f32;
            for g in 0..q.n_groups {
                let xg = &xt[g * q.group..g * q.group + q.group_len(g, inp)];
                let mut part = 0f32;
                for (j, xv) in xg.iter().enumerate() {
                    part += q.table[q.code(r, g, j) as usize] * xv;
                }
                acc += q.scales[r * q.n_groups + g] * part;
            }
            y[t * ldy + r - r0] = acc;
        }
    }
}
