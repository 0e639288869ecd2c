//! Checkpoint weight formats, validation, and repacking into kernel layouts.
//!
//! Quantized weights are repacked at load time into *unsigned code + zero point*
//! form (INT8 symmetric `q` becomes `u = q + 128, z = 128`; INT4 symmetric nibble
//! `n` is already `u = n` with `z = 8`), so one kernel per bit width serves both
//! symmetric and asymmetric checkpoints. Each group is padded to a multiple of
//! 32 elements ([`CHUNK`]); padded codes equal the zero point so they contribute
//! exactly zero.

use crate::error::{KernelError, Result, check_len};
use half::f16;

/// Elements per kernel chunk; every padded group is a whole number of chunks.
pub const CHUNK: usize = 32;

/// On-disk quantized formats (see the crate README for the exact bit layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// `u8` two's-complement `i8` codes in `[-127, 127]`; `w = s·q`.
    Int8Sym,
    /// `u8` codes `u`, `u8` zero points `z`; `w = s·(u − z)`.
    Int8Asym,
    /// Nibbles `n` (low nibble first), `q = n − 8`; `w = s·q`.
    Int4Sym,
    /// Nibbles `u`, zero points `z ∈ [0, 15]`; `w = s·(u − z)`.
    Int4Asym,
}

impl QuantFormat {
    /// Bits per code (4 or 8).
    pub fn bits(self) -> usize {
        match self {
            QuantFormat::Int8Sym | QuantFormat::Int8Asym => 8,
            QuantFormat::Int4Sym | QuantFormat::Int4Asym => 4,
        }
    }
    /// True for the formats that store zero points.
    pub fn is_asym(self) -> bool {
        matches!(self, QuantFormat::Int8Asym | QuantFormat::Int4Asym)
    }
    /// Bytes of `qweight` per row of `inp` elements in the checkpoint layout.
    pub fn raw_row_bytes(self, inp: usize) -> usize {
        if self.bits() == 8 {
            inp
        } else {
            inp.div_ceil(2)
        }
    }
}

/// Borrowed raw quantized parts exactly as stored in a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct QuantParts<'a> {
    /// Storage format.
    pub format: QuantFormat,
    /// Output channels (rows).
    pub out: usize,
    /// Input features (columns).
    pub inp: usize,
    /// Group size along `inp` (the last group may be short).
    pub group: usize,
    /// Codes: `[out, inp]` (INT8) or `[out, ceil(inp/2)]` (INT4).
    pub qweight: &'a [u8],
    /// Scales: `[out, n_groups]`.
    pub scales: &'a [f16],
    /// Zero points `[out, n_groups]`; required for asymmetric formats, must be `None` otherwise.
    pub zeros: Option<&'a [u8]>,
}

/// Owned raw weight in checkpoint layout (returned by [`PackedWeight::to_raw`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RawWeight {
    /// `[out, inp]` f32.
    F32(Vec<f32>),
    /// `[out, inp]` f16.
    F16(Vec<f16>),
    /// Quantized parts.
    Quant {
        /// Format.
        format: QuantFormat,
        /// Group size.
        group: usize,
        /// Codes in checkpoint layout.
        qweight: Vec<u8>,
        /// `[out, n_groups]` scales.
        scales: Vec<f16>,
        /// `[out, n_groups]` zero points (asymmetric formats only).
        zeros: Option<Vec<u8>>,
    },
    /// Codebook parts (see [`crate::CodebookParts`]).
    Codebook {
        /// Bits per code (2, 3 or 4).
        bits: u32,
        /// Group size.
        group: usize,
        /// Densely packed codes in checkpoint layout.
        codes: Vec<u8>,
        /// `[out, n_groups]` scales.
        scales: Vec<f16>,
        /// The `2^bits` levels.
        levels: Vec<f32>,
    },
}

/// Repacked quantized weight (kernel layout).
#[derive(Debug, Clone)]
pub(crate) struct QuantRepr {
    pub format: QuantFormat,
    pub bits: usize,
    pub group: usize,
    pub n_groups: usize,
    /// Padded group length (multiple of [`CHUNK`]).
    pub gp: usize,
    /// Chunks per packed row: `n_groups * gp / CHUNK`, rounded up to even for
    /// INT4 so the int8-activation kernels can read 2-chunk (32-byte) blocks.
    pub row_chunks: usize,
    /// Bytes per packed row = `row_chunks * CHUNK * bits / 8` (padding chunk codes are 0).
    pub row_bytes: usize,
    /// `[out, row_bytes]`. INT8: one byte per element. INT4: per 32-element chunk,
    /// 16 bytes where byte `i` holds element `i` (low nibble) and `i + 16` (high).
    pub codes: Vec<u8>,
    /// `[out, n_groups]` f32 scales.
    pub scales: Vec<f32>,
    /// `[out, n_groups]` `z · s` (f32).
    pub zs: Vec<f32>,
    /// `[out, n_groups]` unsigned zero points.
    pub zeros: Vec<u8>,
    /// INT4 only: row-interleaved copy for the int8-activation GEMV (empty for INT8).
    pub il: crate::interleave::Interleaved,
    /// INT4 only: when set, a nibble `n` stands for the unsigned code `lut[n]` (8 bits; the
    /// codebook weights' int8 form, `crate::codebook`), so `w = s·(lut[n] − z)`. Such a repr
    /// only runs with int8 activations (the kernels apply the table in registers).
    pub lut: Option<[u8; 16]>,
}

impl QuantRepr {
    /// Repacks `out` rows of `inp` codes (`code(r, c)`: a nibble for 4 bits) into the padded
    /// kernel layout: groups padded to whole [`CHUNK`]s with their zero point (code 0 when
    /// `lut` is set: int8 activations are staged as 0 there), INT4 rows rounded up to an even
    /// chunk count, plus the interleaved copy for INT4.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        format: QuantFormat,
        out: usize,
        inp: usize,
        group: usize,
        scales: Vec<f32>, // [out, n_groups]
        zeros: Vec<u8>,   // [out, n_groups]
        lut: Option<[u8; 16]>,
        code: impl Fn(usize, usize) -> u8,
    ) -> QuantRepr {
        let bits = format.bits();
        let n_groups = inp.div_ceil(group);
        let glen = group.min(inp);
        let gp = glen.div_ceil(CHUNK) * CHUNK;
        let mut row_chunks = n_groups * gp / CHUNK;
        if bits == 4 {
            row_chunks += row_chunks % 2;
        }
        let row_bytes = row_chunks * CHUNK * bits / 8;
        let mut codes = vec![0u8; out * row_bytes]; // [out, row_bytes]
        let mut unpacked = vec![0u8; n_groups * gp]; // [n_groups * gp] one padded row
        for r in 0..out {
            for (g, chunk) in unpacked.chunks_mut(gp).enumerate() {
                chunk.fill(if lut.is_some() {
                    0
                } else {
                    zeros[r * n_groups + g]
                });
                let start = g * group;
                let end = (start + group).min(inp);
                for (j, c) in chunk.iter_mut().zip(start..end) {
                    *j = code(r, c);
                }
            }
            let dst = &mut codes[r * row_bytes..(r + 1) * row_bytes];
            if bits == 8 {
                dst.copy_from_slice(&unpacked);
            } else {
                for (d, src) in dst.chunks_mut(CHUNK / 2).zip(unpacked.chunks(CHUNK)) {
                    for i in 0..CHUNK / 2 {
                        d[i] = src[i] | (src[i + CHUNK / 2] << 4);
                    }
                }
            }
        }
        let zs = scales
            .iter()
            .zip(&zeros)
            .map(|(s, z)| s * *z as f32)
            .collect();
        let mut q = QuantRepr {
            format,
            bits,
            group,
            n_groups,
            gp,
            row_chunks,
            row_bytes,
            codes,
            scales,
            zs,
            zeros,
            il: Default::default(),
            lut,
        };
        if bits == 4 {
            q.il = crate::interleave::Interleaved::build(&q, out);
        }
        q
    }

    /// Length of the padded activation row one token needs: `row_chunks * CHUNK`.
    pub fn padded_in(&self) -> usize {
        self.row_chunks * CHUNK
    }

    /// Position of element `e` of chunk `ch` in a staged int8 activation row.
    /// INT8: natural order. INT4: each 2-chunk block of 64 activations is stored
    /// as `[c0 0..16, c1 0..16, c0 16..32, c1 16..32]`, matching the low/high
    /// nibble halves of a 32-byte load of the two chunks' codes.
    #[inline]
    pub fn q8_pos(&self, ch: usize, e: usize) -> usize {
        if self.bits == 8 {
            ch * CHUNK + e
        } else {
            (ch / 2) * 2 * CHUNK + (e / 16) * CHUNK + (ch % 2) * 16 + e % 16
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Repr {
    /// `[out, inp]`.
    F32(Vec<f32>),
    /// `[out, inp]` f16 bit patterns.
    F16(Vec<u16>),
    Quant(Box<QuantRepr>),
    /// Codebook weights (`crate::codebook`).
    Codebook(Box<crate::codebook::CbRepr>),
}

/// A weight matrix `W [out, inp]` repacked for the kernels.
#[derive(Debug, Clone)]
pub struct PackedWeight {
    pub(crate) out: usize,
    pub(crate) inp: usize,
    pub(crate) repr: Repr,
}

/// Refuses a matrix with no rows or no columns.
pub(crate) fn check_dims(out: usize, inp: usize) -> Result<()> {
    if out == 0 || inp == 0 {
        return Err(KernelError::Shape(format!(
            "out and in must be >= 1 (out={out}, in={inp})"
        )));
    }
    Ok(())
}

impl PackedWeight {
    /// Output channels.
    pub fn out(&self) -> usize {
        self.out
    }
    /// Input features.
    pub fn inp(&self) -> usize {
        self.inp
    }
    /// Quantized format, `None` for F32/F16.
    pub fn quant_format(&self) -> Option<QuantFormat> {
        match &self.repr {
            Repr::Quant(q) => Some(q.format),
            _ => None,
        }
    }
    /// The integer weights int8 activations run on: an INT8/INT4 repr itself, or a codebook's
    /// int8 form (`crate::codebook`); `None` for F32/F16.
    pub(crate) fn q8_repr(&self) -> Option<&QuantRepr> {
        match &self.repr {
            Repr::Quant(q) => Some(q),
            Repr::Codebook(c) => Some(&c.q8),
            Repr::F32(_) | Repr::F16(_) => None,
        }
    }
    /// Short format name ("f32", "f16", "int8-sym", ...).
    pub fn format_name(&self) -> &'static str {
        match &self.repr {
            Repr::F32(_) => "f32",
            Repr::F16(_) => "f16",
            Repr::Quant(q) => match q.format {
                QuantFormat::Int8Sym => "int8-sym",
                QuantFormat::Int8Asym => "int8-asym",
                QuantFormat::Int4Sym => "int4-sym",
                QuantFormat::Int4Asym => "int4-asym",
            },
            Repr::Codebook(c) => match c.bits {
                2 => "cb2",
                3 => "cb3",
                _ => "cb4",
            },
        }
    }

    /// Builds from a row-major `w: [out, inp]` f32 matrix.
    pub fn from_f32(out: usize, inp: usize, w: &[f32]) -> Result<Self> {
        check_dims(out, inp)?;
        check_len("f32 weight", out * inp, w.len())?;
        let repr = Repr::F32(w.to_vec());
        Ok(PackedWeight { out, inp, repr })
    }

    /// Builds from a row-major `w: [out, inp]` f16 matrix.
    pub fn from_f16(out: usize, inp: usize, w: &[f16]) -> Result<Self> {
        check_dims(out, inp)?;
        check_len("f16 weight", out * inp, w.len())?;
        let repr = Repr::F16(w.iter().map(|v| v.to_bits()).collect());
        Ok(PackedWeight { out, inp, repr })
    }

    /// Validates checkpoint quantized parts and repacks them.
    pub fn from_quant(p: QuantParts<'_>) -> Result<Self> {
        let QuantParts {
            format,
            out,
            inp,
            group,
            qweight,
            scales,
            zeros,
        } = p;
        check_dims(out, inp)?;
        if group == 0 {
            return Err(KernelError::Group(group));
        }
        let n_groups = inp.div_ceil(group);
        let rrb = format.raw_row_bytes(inp);
        check_len("qweight", out * rrb, qweight.len())?;
        check_len("scales", out * n_groups, scales.len())?;
        if let Some(i) = scales.iter().position(|s| !s.to_f32().is_finite()) {
            return Err(KernelError::NonFiniteScale(i));
        }
        let zmax: u8 = if format.bits() == 8 { 255 } else { 15 };
        let zeros_u: Vec<u8> = match (format.is_asym(), zeros) {
            (true, Some(z)) => {
                check_len("zeros", out * n_groups, z.len())?;
                if let Some(i) = z.iter().position(|&v| v > zmax) {
                    return Err(KernelError::Range {
                        what: "zeros",
                        index: i,
                        value: z[i] as i64,
                    });
                }
                z.to_vec()
            }
            (true, None) => {
                return Err(KernelError::Incompatible(format!(
                    "{format:?} requires zero points"
                )));
            }
            (false, Some(_)) => {
                return Err(KernelError::Incompatible(format!(
                    "{format:?} takes no zero points"
                )));
            }
            (false, None) => vec![if format.bits() == 8 { 128 } else { 8 }; out * n_groups],
        };
        if format == QuantFormat::Int8Sym
            && let Some(i) = qweight.iter().position(|&b| b == 0x80)
        {
            return Err(KernelError::Range {
                what: "qweight (int8 code -128)",
                index: i,
                value: -128,
            });
        }
        let scales_f: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect();
        let q = QuantRepr::build(
            format,
            out,
            inp,
            group,
            scales_f,
            zeros_u,
            None,
            |raw_r, c| raw_code(format, &qweight[raw_r * rrb..(raw_r + 1) * rrb], c),
        );
        Ok(PackedWeight {
            out,
            inp,
            repr: Repr::Quant(Box::new(q)),
        })
    }

    /// Reconstructs the checkpoint-layout raw parts (exact round trip).
    pub fn to_raw(&self) -> RawWeight {
        match &self.repr {
            Repr::F32(w) => RawWeight::F32(w.clone()),
            Repr::F16(w) => RawWeight::F16(w.iter().map(|b| f16::from_bits(*b)).collect()),
            Repr::Quant(q) => {
                let rrb = q.format.raw_row_bytes(self.inp);
                let mut qweight = vec![0u8; self.out * rrb]; // [out, rrb]
                for r in 0..self.out {
                    let raw = &mut qweight[r * rrb..(r + 1) * rrb];
                    for c in 0..self.inp {
                        let u = q.code(r, c);
                        match q.format {
                            QuantFormat::Int8Sym => raw[c] = u.wrapping_sub(128),
                            QuantFormat::Int8Asym => raw[c] = u,
                            _ => raw[c / 2] |= u << (4 * (c % 2)),
                        }
                    }
                }
                let zeros = q.format.is_asym().then(|| q.zeros.clone());
                RawWeight::Quant {
                    format: q.format,
                    group: q.group,
                    qweight,
                    scales: q.scales.iter().map(|s| f16::from_f32(*s)).collect(),
                    zeros,
                }
            }
            Repr::Codebook(c) => c.to_raw(self.out, self.inp),
        }
    }

    /// Dequantized value of element `(r, c)` (slow; for tests and debugging).
    pub fn get(&self, r: usize, c: usize) -> f32 {
        match &self.repr {
            Repr::F32(w) => w[r * self.inp + c],
            Repr::F16(w) => f16::from_bits(w[r * self.inp + c]).to_f32(),
            Repr::Quant(q) => {
                let g = c / q.group;
                let i = r * q.n_groups + g;
                q.scales[i] * (q.code(r, c) as f32 - q.zeros[i] as f32)
            }
            Repr::Codebook(q) => q.get(r, c),
        }
    }

    /// Hints the CPU to pull the whole weight into L2 (software prefetch, x86_64;
    /// a no-op elsewhere). The runtime issues it for the next matrices while it is
    /// busy with compute-bound work (attention), so their load from L3/DRAM overlaps.
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            let (p, bytes) = match &self.repr {
                Repr::F32(w) => (w.as_ptr() as *const i8, w.len() * 4),
                Repr::F16(w) => (w.as_ptr() as *const i8, w.len() * 2),
                Repr::Quant(q) => (q.codes.as_ptr() as *const i8, q.codes.len()),
                Repr::Codebook(q) => (q.codes.as_ptr() as *const i8, q.codes.len()),
            };
            for off in (0..bytes).step_by(64) {
                // SAFETY: prefetch is only a hint and never faults; the address is
                // inside the allocation anyway (off < bytes).
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                        p.add(off),
                    )
                };
            }
        }
    }
}

impl QuantRepr {
    /// Unsigned code of logical element `(r, c)`.
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let g = c / self.group;
        let p = g * self.gp + (c - g * self.group); // padded position
        let row = &self.codes[r * self.row_bytes..(r + 1) * self.row_bytes];
        if self.bits == 8 {
            row[p]
        } else {
            let (ch, i) = (p / CHUNK, p % CHUNK);
            let b = row[ch * CHUNK / 2 + i % (CHUNK / 2)];
            let n = if i < CHUNK / 2 { b & 0xF } else { b >> 4 };
            self.lut.map_or(n, |t| t[n as usize])
        }
    }
}

/// Unsigned code of element `c` of a checkpoint row.
fn raw_code(format: QuantFormat, raw: &[u8], c: usize) -> u8 {
    match format {
        QuantFormat::Int8Sym => raw[c].wrapping_add(128),
        QuantFormat::Int8Asym => raw[c],
        QuantFormat::Int4Sym | QuantFormat::Int4Asym => (raw[c / 2] >> (4 * (c % 2))) & 0xF,
    }
}
