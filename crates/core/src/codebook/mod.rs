//! The codebook (non-uniform) quantized layout: 2-, 3- or 4-bit codes that index a per-tensor
//! table of `2^bits` levels, times a scale per (row, group): F16, or one byte on a logarithmic
//! grid with F16 levels ([`CbScales`], module [`scales`]).
//!
//! A weight `W [rows, cols]` is cut into groups of `g` along `cols` (`n_groups = ⌈cols / g⌉`, the
//! last group may be short, as for [`crate::quant::QTensor`]). Element `(r, c)` dequantizes to
//!
//! ```text
//! w[r, c] = scales[r, c / g] · levels[code(r, c)]
//! ```
//!
//! Codes are packed densely per row, least significant bit first: code `c` of a row occupies
//! bits `[b·c, b·c + b)` of the row's bit stream (bit `k` is bit `k % 8` of byte `k / 8`), every
//! row starts on a byte boundary and the unused high bits of a row's last byte are 0. So a row
//! takes `⌈cols · b / 8⌉` bytes: 4-bit codes are INT4's nibbles (low nibble first), 2-bit codes
//! four to a byte, and 3-bit codes straddle bytes (8 codes in 3 bytes).
//!
//! Every code `0..2^b` indexes a level, so no stored code is out of range; the loader checks the
//! padding bits instead, and that `levels` has exactly `2^b` finite, non-decreasing values with
//! `|level| ≤` [`MAX_LEVEL`] (so `scale · level` stays finite); a `Log8` tensor's scales must lie
//! on the grid and its levels be F16 values.

pub mod scales;

use half::f16;

pub use scales::{CbScales, log8_scale};

use crate::{Error, Result};

/// Largest magnitude of a level: F16's maximum, so that every `scale · level` is finite in F32.
pub const MAX_LEVEL: f32 = 65504.0;

/// A codebook-quantized 2-D weight `[rows, cols]` (see the module docs for the layout).
#[derive(Debug, Clone, PartialEq)]
pub struct CbTensor {
    /// Bits per code: 2, 3 or 4.
    pub bits: u32,
    /// Rows (output channels).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// Group size along `cols` (the last group may be shorter).
    pub group: usize,
    /// Packed codes, `rows × row_bytes(bits, cols)` bytes.
    pub codes: Vec<u8>,
    /// One scale per (row, group): `[rows, n_groups]` (with `Log8`, each a [`log8_scale`]).
    pub scales: Vec<f16>,
    /// The codebook: `2^bits` non-decreasing levels (with `Log8`, each an F16 value).
    pub levels: Vec<f32>,
    /// How the scales and levels are stored.
    pub scale_format: CbScales,
}

/// Bytes of one packed row of `cols` codes of `bits` bits: `⌈cols · bits / 8⌉`.
pub fn row_bytes(bits: u32, cols: usize) -> usize {
    (cols * bits as usize).div_ceil(8)
}

/// Checks that `bits` is a codebook width (2, 3 or 4).
pub fn check_bits(bits: u32) -> Result<()> {
    if (2..=4).contains(&bits) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "codebook codes are 2, 3 or 4 bits, got {bits}"
        )))
    }
}

/// The code width of a table of `n` levels: 4 → 2, 8 → 3, 16 → 4 bits; other sizes are errors.
pub fn bits_for_levels(n: usize) -> Result<u32> {
    match n {
        4 => Ok(2),
        8 => Ok(3),
        16 => Ok(4),
        n => Err(Error::invalid(format!(
            "{n} levels: a codebook has 4, 8 or 16"
        ))),
    }
}

/// Packs unsigned codes (`codes.len()` = `cols`, each `< 2^bits`) of one row into `dst`
/// (`row_bytes(bits, cols)` bytes, zeroed by the caller).
pub fn pack_row(bits: u32, codes: &[u8], dst: &mut [u8]) {
    let b = bits as usize;
    for (c, &code) in codes.iter().enumerate() {
        let off = c * b;
        let (byte, shift) = (off / 8, off % 8);
        let v = (code as u16) << shift;
        dst[byte] |= v as u8;
        if shift + b > 8 {
            dst[byte + 1] |= (v >> 8) as u8;
        }
    }
}

/// Code `c` of a packed row.
#[inline]
pub fn unpack_code(bits: u32, row: &[u8], c: usize) -> u8 {
    let b = bits as usize;
    let off = c * b;
    let (byte, shift) = (off / 8, off % 8);
    let lo = row[byte] as u16;
    let hi = if shift + b > 8 {
        row[byte + 1] as u16
    } else {
        0
    };
    (((lo | (hi << 8)) >> shift) & ((1u16 << b) - 1)) as u8
}

/// Index of the level nearest to `x` in the non-decreasing `levels` (ties go to the lower one).
#[inline]
pub fn nearest_level(levels: &[f32], x: f32) -> u8 {
    let mut best = 0usize;
    let mut dist = f32::INFINITY;
    for (k, &l) in levels.iter().enumerate() {
        let d = (x - l).abs();
        if d < dist {
            best = k;
            dist = d;
        }
    }
    best as u8
}

impl CbTensor {
    /// Groups per row: `⌈cols / group⌉`.
    pub fn n_groups(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    /// Bytes of one packed row.
    pub fn row_bytes(&self) -> usize {
        row_bytes(self.bits, self.cols)
    }

    /// Checks the width, every length, the padding bits, the scales and the levels.
    /// `name` labels errors.
    pub fn validate(&self, name: &str) -> Result<()> {
        check_bits(self.bits).map_err(|e| Error::tensor(name, e.to_string()))?;
        if self.rows == 0 || self.cols == 0 {
            return Err(Error::tensor(
                name,
                format!("empty shape [{}, {}]", self.rows, self.cols),
            ));
        }
        if self.group == 0 || self.group > self.cols {
            return Err(Error::tensor(
                name,
                format!("group size {} not in 1..={} (cols)", self.group, self.cols),
            ));
        }
        let rb = self.row_bytes();
        let want_q = self.rows.saturating_mul(rb);
        if self.codes.len() != want_q {
            return Err(Error::tensor(
                name,
                format!(
                    "codes have {} bytes, [{}, {}] at {} bits needs {want_q}",
                    self.codes.len(),
                    self.rows,
                    self.cols,
                    self.bits
                ),
            ));
        }
        let used = self.cols * self.bits as usize % 8;
        if used != 0 {
            let pad_mask = !((1u16 << used) - 1) as u8;
            if let Some(r) = (0..self.rows).find(|r| self.codes[(r + 1) * rb - 1] & pad_mask != 0) {
                return Err(Error::tensor(
                    name,
                    format!("row {r}: padding bits after the last code are not zero"),
                ));
            }
        }
        let want_s = self.rows * self.n_groups();
        if self.scales.len() != want_s {
            return Err(Error::tensor(
                name,
                format!("scales has {} values, expected {want_s}", self.scales.len()),
            ));
        }
        if let Some(s) = self.scales.iter().find(|s| !s.is_finite()) {
            return Err(Error::tensor(name, format!("non-finite scale {s}")));
        }
        check_levels(self.bits, &self.levels).map_err(|e| Error::tensor(name, e.to_string()))?;
        if self.scale_format == CbScales::Log8 {
            if let Some(s) = self
                .scales
                .iter()
                .find(|s| scales::log8_index(**s).is_none())
            {
                return Err(Error::tensor(
                    name,
                    format!("scale {s} is not on the log8 grid"),
                ));
            }
            if let Some(l) = self.levels.iter().find(|l| !scales::is_f16_exact(**l)) {
                return Err(Error::tensor(
                    name,
                    format!("level {l} of a log8 tensor is not an F16 value"),
                ));
            }
        }
        Ok(())
    }

    /// The same tensor stored as `format`: checks that the scales and levels are representable
    /// (a `Log8` tensor's come from [`scales::to_log8`]).
    pub fn into_scale_format(mut self, format: CbScales) -> Result<Self> {
        self.scale_format = format;
        self.validate("<packed>")?;
        Ok(self)
    }

    /// The code at `(row, col)`.
    #[inline]
    pub fn code(&self, row: usize, col: usize) -> u8 {
        let rb = self.row_bytes();
        unpack_code(self.bits, &self.codes[row * rb..(row + 1) * rb], col)
    }

    /// Packs unpacked codes `[rows, cols]` with scales `[rows, n_groups]` and `levels`, checking
    /// everything ([`CbTensor::validate`]); a code `≥ 2^bits` is an error. The result stores F16
    /// scales; [`CbTensor::into_scale_format`] changes that.
    pub fn from_codes(
        bits: u32,
        rows: usize,
        cols: usize,
        group: usize,
        codes: &[u8],
        scales: Vec<f16>,
        levels: Vec<f32>,
    ) -> Result<Self> {
        check_bits(bits)?;
        if codes.len() != rows * cols {
            return Err(Error::invalid(format!(
                "{} codes for a [{rows}, {cols}] tensor",
                codes.len()
            )));
        }
        if let Some(bad) = codes.iter().find(|&&c| u32::from(c) >= (1u32 << bits)) {
            return Err(Error::invalid(format!(
                "code {bad} out of range for {bits}-bit codes"
            )));
        }
        let rb = row_bytes(bits, cols);
        let mut packed = vec![0u8; rows * rb]; // [rows, rb]
        if cols > 0 {
            for (src, dst) in codes.chunks_exact(cols).zip(packed.chunks_exact_mut(rb)) {
                pack_row(bits, src, dst);
            }
        }
        let t = CbTensor {
            bits,
            rows,
            cols,
            group,
            codes: packed,
            scales,
            levels,
            scale_format: CbScales::F16,
        };
        t.validate("<packed>")?;
        Ok(t)
    }

    /// Quantizes `w [rows, cols]` onto the given codebook: each group's scale is its absmax over
    /// the largest level magnitude (rounded up to F16), each weight takes the nearest level of
    /// `w / scale`. (Choosing the levels — k-means, GPTQ feedback — lives in `squish-quant`.)
    pub fn from_float(
        w: &[f32],
        rows: usize,
        cols: usize,
        group: usize,
        levels: Vec<f32>,
    ) -> Result<Self> {
        let bits = bits_for_levels(levels.len())?;
        check_levels(bits, &levels)?;
        if w.len() != rows * cols || rows == 0 || cols == 0 {
            return Err(Error::invalid(format!(
                "{} values for a [{rows}, {cols}] tensor",
                w.len()
            )));
        }
        if group == 0 || group > cols {
            return Err(Error::invalid(format!("group {group} not in 1..={cols}")));
        }
        if let Some(x) = w.iter().find(|x| !x.is_finite()) {
            return Err(Error::invalid(format!("non-finite weight {x}")));
        }
        let lmax = levels.iter().fold(0f32, |m, l| m.max(l.abs()));
        let (mut codes, mut scales) = (vec![0u8; rows * cols], Vec::new());
        for (r, row) in w.chunks_exact(cols).enumerate() {
            for (g, vals) in row.chunks(group).enumerate() {
                let amax = vals.iter().fold(0f32, |m, x| m.max(x.abs()));
                let s = scales::f16_at_least(if lmax > 0.0 { amax / lmax } else { 0.0 })?;
                let inv = 1.0 / s.to_f32();
                for (j, &x) in vals.iter().enumerate() {
                    codes[r * cols + g * group + j] = nearest_level(&levels, x * inv);
                }
                scales.push(s);
            }
        }
        Self::from_codes(bits, rows, cols, group, &codes, scales, levels)
    }

    /// Dequantizes one row into `out` (`out.len() == cols`).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let ng = self.n_groups();
        for (col, o) in out.iter_mut().enumerate().take(self.cols) {
            let s = self.scales[row * ng + col / self.group].to_f32();
            *o = s * self.levels[self.code(row, col) as usize];
        }
    }

    /// Dequantizes the whole tensor (`to_float`): `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// The scalar reference dot product of row `row` with `x [cols]`:
    /// `Σ_g scale[row, g] · Σ_{c ∈ g} levels[code(row, c)] · x[c]` (sums in column order).
    pub fn vec_dot(&self, row: usize, x: &[f32]) -> f32 {
        let ng = self.n_groups();
        let mut acc = 0f32;
        for (g, xg) in x[..self.cols].chunks(self.group).enumerate() {
            let mut part = 0f32;
            for (j, xv) in xg.iter().enumerate() {
                part += self.levels[self.code(row, g * self.group + j) as usize] * xv;
            }
            acc += self.scales[row * ng + g].to_f32() * part;
        }
        acc
    }

    /// Bytes this tensor occupies in a checkpoint (codes + scales + levels).
    pub fn storage_bytes(&self) -> usize {
        let f = self.scale_format;
        self.codes.len() + f.scale_bytes() * self.scales.len() + f.level_bytes() * self.levels.len()
    }
}

/// Checks a codebook: `2^bits` finite, non-decreasing levels with `|level| ≤` [`MAX_LEVEL`].
pub fn check_levels(bits: u32, levels: &[f32]) -> Result<()> {
    check_bits(bits)?;
    if levels.len() != 1 << bits {
        return Err(Error::invalid(format!(
            "codebook has {} levels, {bits}-bit codes need {}",
            levels.len(),
            1 << bits
        )));
    }
    if let Some(i) = levels
        .iter()
        .position(|l| !l.is_finite() || l.abs() > MAX_LEVEL)
    {
        return Err(Error::invalid(format!(
            "level {i} is {} (levels must be finite and within ±{MAX_LEVEL})",
            levels[i]
        )));
    }
    if let Some(i) = levels.windows(2).position(|p| p[1] < p[0]) {
        return Err(Error::invalid(format!(
            "levels must be non-decreasing: level {} = {} > level {} = {}",
            i,
            levels[i],
            i + 1,
            levels[i + 1]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(rows: usize, cols: usize, bits: u32) -> Vec<u8> {
        (0..rows * cols)
            .map(|i| ((i * 7 + 3) % (1 << bits)) as u8)
            .collect()
    }

    fn levels(bits: u32) -> Vec<f32> {
        (0..1 << bits).map(|k| k as f32 * 0.5 - 1.0).collect()
    }

    #[test]
    fn pack_unpack_is_exact_for_every_width_and_odd_widths() {
        for bits in 2..=4 {
            for &(rows, cols, group) in
                &[(3, 172, 32), (2, 17, 16), (1, 1, 1), (4, 64, 64), (5, 3, 2)]
            {
                let c = codes(rows, cols, bits);
                let ng = cols.div_ceil(group);
                let t = CbTensor::from_codes(
                    bits,
                    rows,
                    cols,
                    group,
                    &c,
                    vec![f16::ONE; rows * ng],
                    levels(bits),
                )
                .unwrap();
                assert_eq!(t.codes.len(), rows * (cols * bits as usize).div_ceil(8));
                for r in 0..rows {
                    for col in 0..cols {
                        assert_eq!(t.code(r, col), c[r * cols + col], "{bits} [{r},{col}]");
                    }
                }
            }
        }
    }

    #[test]
    fn three_bit_codes_straddle_bytes_lsb_first() {
        // Codes 0..8 in 3 bytes: bit stream 000 100 010 110 001 101 011 111.
        let c: Vec<u8> = (0..8).collect();
        let t = CbTensor::from_codes(3, 1, 8, 8, &c, vec![f16::ONE], levels(3)).unwrap();
        assert_eq!(t.codes, vec![0b1000_1000, 0b1100_0110, 0b1111_1010]);
    }

    #[test]
    fn dequantize_and_vec_dot_agree_with_short_last_group() {
        let (rows, cols, group) = (2, 17, 8);
        let c = codes(rows, cols, 4);
        let scales: Vec<f16> = (0..rows * 3)
            .map(|i| f16::from_f32(0.25 * (i + 1) as f32))
            .collect();
        let t = CbTensor::from_codes(4, rows, cols, group, &c, scales, levels(4)).unwrap();
        let d = t.dequantize();
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
        for r in 0..rows {
            let want: f32 = d[r * cols..(r + 1) * cols]
                .iter()
                .zip(&x)
                .map(|(a, b)| a * b)
                .sum();
            assert!((t.vec_dot(r, &x) - want).abs() < 1e-4);
            assert_eq!(
                d[r * cols + 16],
                t.scales[r * 3 + 2].to_f32() * t.levels[c[r * cols + 16] as usize]
            );
        }
    }

    #[test]
    fn from_float_takes_the_nearest_level() {
        let lv = vec![-1.0, -0.3, 0.2, 1.0];
        let w = [0.5f32, -0.5, 0.1, -1.0, 2.0, 0.0];
        let t = CbTensor::from_float(&w, 2, 3, 3, lv.clone()).unwrap();
        let d = t.dequantize();
        for (i, (&x, &q)) in w.iter().zip(&d).enumerate() {
            let s = t.scales[i / 3].to_f32();
            let best = lv
                .iter()
                .map(|l| (x - s * l).abs())
                .fold(f32::INFINITY, f32::min);
            assert!(((x - q).abs() - best).abs() < 1e-6, "{i}: {x} -> {q}");
        }
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let one = vec![f16::ONE];
        let e = CbTensor::from_codes(5, 1, 2, 2, &[0, 1], one.clone(), vec![0.0; 32]);
        assert!(e.unwrap_err().to_string().contains("2, 3 or 4 bits"));
        let e = CbTensor::from_codes(2, 1, 2, 2, &[0, 4], one.clone(), levels(2));
        assert!(e.unwrap_err().to_string().contains("out of range"));
        let e = CbTensor::from_codes(2, 1, 2, 2, &[0, 1], one.clone(), levels(3));
        assert!(e.unwrap_err().to_string().contains("need 4"));
        let e = CbTensor::from_codes(
            2,
            1,
            2,
            2,
            &[0, 1],
            one.clone(),
            vec![0.0, f32::NAN, 1.0, 2.0],
        );
        assert!(e.unwrap_err().to_string().contains("finite"));
        let e = CbTensor::from_codes(2, 1, 2, 2, &[0, 1], one.clone(), vec![0.0, 2.0, 1.0, 3.0]);
        assert!(e.unwrap_err().to_string().contains("non-decreasing"));
        let mut t = CbTensor::from_codes(3, 1, 3, 3, &[1, 2, 3], one, levels(3)).unwrap();
        t.codes[1] |= 0x80; // bit 15: past the 9 code bits
        assert!(t.validate("w").unwrap_err().to_string().contains("padding"));
        t.codes.pop();
        assert!(t.validate("w").unwrap_err().to_string().contains("needs 2"));
    }
}
