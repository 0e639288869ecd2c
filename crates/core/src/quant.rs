//! The packed byte layout of quantized weights — owned here so that every stage and the runtime
//! agree on it. The algorithms that *choose* codes (RTN, GPTQ, …) live in `squish-quant`.
//!
//! A weight `W [out, in]` (row = output channel) is cut into groups of `g` along `in`;
//! `n_groups = ⌈in / g⌉` and the last group may be short (stories260K's 172-wide rows at g = 32
//! have groups 32,32,32,32,32,12 — nothing is padded away).
//!
//! | format      | `qweight` (U8)         | code → value                              |
//! |-------------|------------------------|-------------------------------------------|
//! | INT8 sym    | `[out, in]` i8 bits    | `scale · q`, q ∈ [−127, 127]              |
//! | INT8 asym   | `[out, in]` u8         | `scale · (u − z)`, u ∈ [0, 255]           |
//! | INT4 sym    | `[out, ⌈in/2⌉]` nibbles | `scale · (n − 8)`, n ∈ [0, 15]           |
//! | INT4 asym   | `[out, ⌈in/2⌉]` nibbles | `scale · (u − z)`, u, z ∈ [0, 15]        |
//!
//! `scales` are F16 `[out, n_groups]`; `zeros` (asymmetric only) are U8 `[out, n_groups]`.
//! INT4 rows start on a byte boundary, low nibble first; an odd row's last high nibble is 0.

use half::f16;

use crate::{Error, Result};

/// Bits per weight code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum QBits {
    /// 4-bit codes, two per byte.
    #[serde(rename = "int4")]
    Int4,
    /// 8-bit codes, one per byte.
    #[serde(rename = "int8")]
    Int8,
}

impl QBits {
    /// Number of bits per code.
    pub fn bits(self) -> u32 {
        match self {
            QBits::Int4 => 4,
            QBits::Int8 => 8,
        }
    }
    /// Bytes of `qweight` for one row of `cols` codes.
    pub fn row_bytes(self, cols: usize) -> usize {
        match self {
            QBits::Int4 => cols.div_ceil(2),
            QBits::Int8 => cols,
        }
    }
    /// Largest unsigned code (15 or 255).
    pub fn max_code(self) -> u8 {
        match self {
            QBits::Int4 => 15,
            QBits::Int8 => 255,
        }
    }
}

/// A quantized 2-D weight `[rows, cols]` in squish's packed layout (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct QTensor {
    /// Code width.
    pub bits: QBits,
    /// Rows (output channels).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// Group size along `cols` (the last group may be shorter).
    pub group: usize,
    /// Packed codes, `rows × bits.row_bytes(cols)` bytes.
    pub qweight: Vec<u8>,
    /// One F16 scale per (row, group): `[rows, n_groups]`.
    pub scales: Vec<f16>,
    /// Zero points for asymmetric formats: `[rows, n_groups]`; `None` = symmetric.
    pub zeros: Option<Vec<u8>>,
}

impl QTensor {
    /// Groups per row: `⌈cols / group⌉`.
    pub fn n_groups(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    /// True when zero points are stored.
    pub fn is_asymmetric(&self) -> bool {
        self.zeros.is_some()
    }

    /// Checks every length, the group size and the zero-point range. `name` labels errors.
    pub fn validate(&self, name: &str) -> Result<()> {
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
        let want_q = self.rows * self.bits.row_bytes(self.cols);
        if self.qweight.len() != want_q {
            return Err(Error::tensor(
                name,
                format!(
                    "qweight has {} bytes, [{}, {}] at {:?} needs {want_q}",
                    self.qweight.len(),
                    self.rows,
                    self.cols,
                    self.bits
                ),
            ));
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
        if let Some(z) = &self.zeros {
            if z.len() != want_s {
                return Err(Error::tensor(
                    name,
                    format!("zeros has {} values, expected {want_s}", z.len()),
                ));
            }
            if let Some(bad) = z.iter().find(|&&v| v > self.bits.max_code()) {
                return Err(Error::tensor(
                    name,
                    format!("zero point {bad} exceeds {}", self.bits.max_code()),
                ));
            }
        }
        Ok(())
    }

    /// The unsigned code (nibble or byte, as stored) at `(row, col)`.
    #[inline]
    pub fn code(&self, row: usize, col: usize) -> u8 {
        let rb = self.bits.row_bytes(self.cols);
        match self.bits {
            QBits::Int8 => self.qweight[row * rb + col],
            QBits::Int4 => {
                let b = self.qweight[row * rb + col / 2];
                if col.is_multiple_of(2) {
                    b & 0x0f
                } else {
                    b >> 4
                }
            }
        }
    }

    /// The integer level `code − zero` (asym) or signed code (sym) at `(row, col)`.
    #[inline]
    pub fn level(&self, row: usize, col: usize) -> i32 {
        let c = self.code(row, col);
        let g = row * self.n_groups() + col / self.group;
        match (&self.zeros, self.bits) {
            (Some(z), _) => c as i32 - z[g] as i32,
            (None, QBits::Int8) => c as i8 as i32,
            (None, QBits::Int4) => c as i32 - 8,
        }
    }

    /// Dequantizes one row into `out` (`out.len() == cols`).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let ng = self.n_groups();
        for (col, o) in out.iter_mut().enumerate().take(self.cols) {
            let s = self.scales[row * ng + col / self.group].to_f32();
            *o = s * self.level(row, col) as f32;
        }
    }

    /// Dequantizes the whole tensor: `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Packs integer levels (`[rows, cols]`, sym: signed q; asym: unsigned u) with given scales and
    /// zeros into the layout. Levels outside the format's range are an error.
    pub fn from_levels(
        bits: QBits,
        rows: usize,
        cols: usize,
        group: usize,
        levels: &[i32],
        scales: Vec<f16>,
        zeros: Option<Vec<u8>>,
    ) -> Result<Self> {
        if levels.len() != rows * cols {
            return Err(Error::invalid(format!(
                "{} levels for a [{rows}, {cols}] tensor",
                levels.len()
            )));
        }
        let (lo, hi, offset) = match (bits, zeros.is_some()) {
            (QBits::Int8, false) => (-127, 127, 0),
            (QBits::Int8, true) => (0, 255, 0),
            (QBits::Int4, false) => (-8, 7, 8),
            (QBits::Int4, true) => (0, 15, 0),
        };
        if let Some(bad) = levels.iter().find(|&&l| l < lo || l > hi) {
            return Err(Error::invalid(format!(
                "level {bad} outside [{lo}, {hi}] for {bits:?}"
            )));
        }
        let rb = bits.row_bytes(cols);
        let mut qweight = vec![0u8; rows * rb];
        for r in 0..rows {
            for c in 0..cols {
                // Truncation to u8 gives the i8 two's-complement byte for signed INT8 levels.
                let code = (levels[r * cols + c] + offset) as u8;
                match bits {
                    QBits::Int8 => qweight[r * rb + c] = code,
                    QBits::Int4 => qweight[r * rb + c / 2] |= (code & 0x0f) << (4 * (c % 2)),
                }
            }
        }
        let q = QTensor {
            bits,
            rows,
            cols,
            group,
            qweight,
            scales,
            zeros,
        };
        q.validate("<packed>")?;
        Ok(q)
    }

    /// Bytes this tensor occupies in a checkpoint (qweight + scales + zeros).
    pub fn storage_bytes(&self) -> usize {
        self.qweight.len() + 2 * self.scales.len() + self.zeros.as_ref().map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(rows: usize, cols: usize, lo: i32, hi: i32) -> Vec<i32> {
        (0..rows * cols)
            .map(|i| lo + (i as i32 * 7 + 3) % (hi - lo + 1))
            .collect()
    }

    #[test]
    fn pack_unpack_is_exact_for_every_format_and_odd_widths() {
        for &(bits, asym, lo, hi) in &[
            (QBits::Int4, false, -8, 7),
            (QBits::Int4, true, 0, 15),
            (QBits::Int8, false, -127, 127),
            (QBits::Int8, true, 0, 255),
        ] {
            for &(rows, cols, group) in &[(3, 172, 32), (2, 17, 16), (1, 1, 1), (4, 64, 64)] {
                let lv = levels(rows, cols, lo, hi);
                let ng = cols.div_ceil(group);
                let zeros = asym.then(|| vec![0u8; rows * ng]);
                let q = QTensor::from_levels(
                    bits,
                    rows,
                    cols,
                    group,
                    &lv,
                    vec![f16::ONE; rows * ng],
                    zeros,
                )
                .unwrap();
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            q.level(r, c),
                            lv[r * cols + c],
                            "{bits:?} asym={asym} [{r},{c}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn short_last_group_uses_its_own_scale() {
        let (rows, cols, group) = (1, 172, 32);
        let lv = vec![1i32; cols];
        let mut scales = vec![f16::from_f32(1.0); 6];
        scales[5] = f16::from_f32(0.5);
        let q = QTensor::from_levels(QBits::Int4, rows, cols, group, &lv, scales, None).unwrap();
        let d = q.dequantize();
        assert_eq!(d[159], 1.0);
        assert_eq!(d[160], 0.5);
        assert_eq!(d[171], 0.5);
    }

    #[test]
    fn bad_lengths_and_levels_are_errors() {
        assert!(
            QTensor::from_levels(QBits::Int4, 1, 4, 2, &[0, 1, 2, 9], vec![f16::ONE; 2], None)
                .is_err()
        );
        assert!(
            QTensor::from_levels(QBits::Int4, 1, 4, 2, &[0, 1, 2], vec![f16::ONE; 2], None)
                .is_err()
        );
        let mut q =
            QTensor::from_levels(QBits::Int8, 1, 4, 2, &[0, 1, 2, 3], vec![f16::ONE; 2], None)
                .unwrap();
        q.scales.pop();
        assert!(q.validate("w").is_err());
        q.scales.push(f16::NAN);
        assert!(
            q.validate("w")
                .unwrap_err()
                .to_string()
                .contains("non-finite")
        );
    }
}
