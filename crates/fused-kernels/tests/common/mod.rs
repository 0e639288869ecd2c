//! Shared test helpers: deterministic xorshift RNG and random weights.
#![allow(dead_code, clippy::needless_range_loop)]

use half::f16;
use squish_kernels::{PackedWeight, QuantFormat, QuantParts};

/// xorshift64* generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub fn unif(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    /// Roughly normal (sum of 4 uniforms), std ≈ 0.58·scale.
    pub fn gauss(&mut self) -> f32 {
        (self.unif() + self.unif() + self.unif() + self.unif()) * 0.5
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.gauss()).collect()
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

pub const WIDTHS: [usize; 8] = [1, 2, 17, 33, 64, 172, 256, 768];
pub const FORMATS: [QuantFormat; 4] = [
    QuantFormat::Int8Sym,
    QuantFormat::Int8Asym,
    QuantFormat::Int4Sym,
    QuantFormat::Int4Asym,
];

/// Owned raw quantized parts.
pub struct RawQ {
    pub format: QuantFormat,
    pub out: usize,
    pub inp: usize,
    pub group: usize,
    pub qweight: Vec<u8>,       // [out, raw_row_bytes]
    pub scales: Vec<f16>,       // [out, n_groups]
    pub zeros: Option<Vec<u8>>, // [out, n_groups]
}

impl RawQ {
    pub fn parts(&self) -> QuantParts<'_> {
        QuantParts {
            format: self.format,
            out: self.out,
            inp: self.inp,
            group: self.group,
            qweight: &self.qweight,
            scales: &self.scales,
            zeros: self.zeros.as_deref(),
        }
    }
    /// Dequantized weight straight from the checkpoint layout (independent of the packer).
    pub fn deq(&self, r: usize, c: usize) -> f64 {
        let ng = self.inp.div_ceil(self.group);
        let g = c / self.group;
        let s = self.scales[r * ng + g].to_f64();
        let rb = self.format.raw_row_bytes(self.inp);
        let row = &self.qweight[r * rb..(r + 1) * rb];
        let q = match self.format {
            QuantFormat::Int8Sym => row[c] as i8 as f64,
            QuantFormat::Int8Asym => {
                row[c] as f64 - self.zeros.as_ref().unwrap()[r * ng + g] as f64
            }
            QuantFormat::Int4Sym => ((row[c / 2] >> (4 * (c % 2))) & 0xF) as f64 - 8.0,
            QuantFormat::Int4Asym => {
                ((row[c / 2] >> (4 * (c % 2))) & 0xF) as f64
                    - self.zeros.as_ref().unwrap()[r * ng + g] as f64
            }
        };
        s * q
    }
}

/// Random quantized weight of the given shape (codes uniform over the full range).
pub fn rand_quant(
    rng: &mut Rng,
    format: QuantFormat,
    out: usize,
    inp: usize,
    group: usize,
) -> RawQ {
    let ng = inp.div_ceil(group);
    let rb = format.raw_row_bytes(inp);
    let mut qweight = vec![0u8; out * rb];
    for r in 0..out {
        for c in 0..inp {
            match format {
                QuantFormat::Int8Sym => {
                    qweight[r * rb + c] = (rng.below(255) as i32 - 127) as i8 as u8
                }
                QuantFormat::Int8Asym => qweight[r * rb + c] = rng.below(256) as u8,
                _ => qweight[r * rb + c / 2] |= (rng.below(16) as u8) << (4 * (c % 2)),
            }
        }
    }
    let scales = (0..out * ng)
        .map(|_| f16::from_f32(0.01 + 0.05 * rng.unif().abs()))
        .collect();
    let zmax = if format.bits() == 8 { 256 } else { 16 };
    let zeros = format
        .is_asym()
        .then(|| (0..out * ng).map(|_| rng.below(zmax) as u8).collect());
    RawQ {
        format,
        out,
        inp,
        group,
        qweight,
        scales,
        zeros,
    }
}

/// A random group size valid for `inp` (16/32/64/128 or per-row).
pub fn rand_group(rng: &mut Rng, inp: usize) -> usize {
    rng.pick(&[16, 32, 64, 128, inp, inp.max(2) - 1])
}

/// Reference `y = W x` in f64 from any packed weight via `get`, plus Σ|w·x|.
pub fn ref_matvec(w: &PackedWeight, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; w.out()];
    let mut mag = vec![0f64; w.out()];
    for r in 0..w.out() {
        for c in 0..w.inp() {
            let p = w.get(r, c) as f64 * x[c] as f64;
            y[r] += p;
            mag[r] += p.abs();
        }
    }
    (y, mag)
}

/// Max over rows of |a − b| / (Σ|w·x| + tiny).
pub fn max_rel(a: &[f32], b: &[f32], mag: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(mag)
        .map(|((a, b), m)| (*a as f64 - *b as f64).abs() / (m + 1e-30))
        .fold(0.0, f64::max)
}

/// Per-row magnitude the kernels actually accumulate: `Σ_c s·(u_c + z)·|x_c|`
/// for quantized weights (unsigned code `u`, zero point `z`), `Σ|w·x|` for dense.
/// Rounding in the zero-point subtraction scales with this, not with `Σ|w·x|`.
pub fn kernel_mag(w: &PackedWeight, x: &[f32]) -> Vec<f64> {
    use squish_kernels::RawWeight;
    let RawWeight::Quant {
        format,
        group,
        qweight,
        scales,
        zeros,
    } = w.to_raw()
    else {
        return ref_matvec(w, x).1;
    };
    let (inp, ng) = (w.inp(), w.inp().div_ceil(group));
    let rb = format.raw_row_bytes(inp);
    (0..w.out())
        .map(|r| {
            let mut m = 0f64;
            for (c, xv) in x.iter().enumerate() {
                let i = r * ng + c / group;
                let b = qweight[r * rb + if format.bits() == 8 { c } else { c / 2 }];
                let (u, z) = match format {
                    QuantFormat::Int8Sym => (b.wrapping_add(128) as f64, 128.0),
                    QuantFormat::Int8Asym => (b as f64, zeros.as_ref().unwrap()[i] as f64),
                    QuantFormat::Int4Sym => (((b >> (4 * (c % 2))) & 0xF) as f64, 8.0),
                    QuantFormat::Int4Asym => (
                        ((b >> (4 * (c % 2))) & 0xF) as f64,
                        zeros.as_ref().unwrap()[i] as f64,
                    ),
                };
                m += scales[i].to_f64() * (u + z) * xv.abs() as f64;
            }
            m
        })
        .collect()
}
