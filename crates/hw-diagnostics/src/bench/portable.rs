//! Portable ("scalar") kernels: plain Rust, no intrinsics. They are also the reference the SIMD
//! kernels are tested against.

/// Independent accumulators in [`fma_peak`].
pub const FMA_ACCUMULATORS: usize = 16;
/// Flops per repetition of [`fma_peak`] (one multiply + one add per accumulator).
pub const FMA_FLOPS_PER_REP: u64 = FMA_ACCUMULATORS as u64 * 2;

/// Peak-rate multiply-add loop: `acc = acc * a + b` on independent accumulators.
/// (No `mul_add`: without hardware FMA in the baseline target it would be a libm call.)
pub fn fma_peak(reps: u64, a: f32, b: f32) -> f32 {
    let mut acc = [1.0f32; FMA_ACCUMULATORS];
    for _ in 0..reps {
        for x in acc.iter_mut() {
            *x = *x * a + b;
        }
    }
    acc.iter().sum()
}

/// Independent accumulators of [`int8_peak`].
pub const INT8_PEAK_ACCUMULATORS: usize = 16;

/// Register-resident integer multiply-add loop with the x86 peak loops' operands (accumulator
/// `i` multiplies by `b + i`, the activation `a` grows by 1 per repetition): 2 ops per
/// accumulator per repetition.
pub fn int8_peak(reps: u64, a: u8, b: i8) -> i32 {
    let mut acc = [0i32; INT8_PEAK_ACCUMULATORS];
    let mut a = a;
    for _ in 0..reps {
        for (i, x) in acc.iter_mut().enumerate() {
            let w = i32::from(b.wrapping_add(i as i8));
            *x = x.wrapping_add(i32::from(a).wrapping_mul(w));
        }
        a = a.wrapping_add(1);
    }
    acc.iter().fold(0i32, |s, v| s.wrapping_add(*v))
}

/// The exact result of an INT8 peak loop: `Σ_rep Σ_{i<acc} bytes · (a + rep mod 256) · (b + i)`
/// (wrapping i32), with `bytes` byte pairs per accumulator per repetition.
pub fn int8_peak_expected(reps: u64, a: u8, b: i8, acc: usize, bytes: usize) -> i32 {
    let wsum: i32 = (0..acc).map(|i| i32::from(b.wrapping_add(i as i8))).sum();
    (0..reps).fold(0i32, |s, r| {
        let ar = i32::from(a.wrapping_add(r as u8));
        s.wrapping_add((bytes as i32).wrapping_mul(ar).wrapping_mul(wsum))
    })
}

/// IEEE binary16 bits to f32 (exact; handles zero, subnormals, infinities and NaN).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: shift until the implicit bit appears, adjusting the exponent.
            let mut e = 127 - 14;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Nearest binary16 bits for a finite, normal-range f32 (used only to build benchmark data).
pub fn f32_to_f16_approx(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if !(1..31).contains(&exp) {
        return sign; // out of normal half range: flush to signed zero
    }
    let man = ((b >> 13) & 0x3ff) as u16;
    sign | ((exp as u16) << 10) | man
}

/// Dot product of f16 weights (as bits) with f32 activations.
pub fn dot_f16(w: &[u16], x: &[f32]) -> f32 {
    let n = w.len().min(x.len());
    let mut acc = [0.0f32; 8];
    let (wc, xc) = (w[..n].chunks_exact(8), x[..n].chunks_exact(8));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (wb, xb) in wc.zip(xc) {
        for k in 0..8 {
            acc[k] += f16_to_f32(wb[k]) * xb[k];
        }
    }
    let tail: f32 = wr.iter().zip(xr).map(|(w, x)| f16_to_f32(*w) * x).sum();
    acc.iter().sum::<f32>() + tail
}

/// Dot product of u8 activations with i8 weights, accumulated in i32.
pub fn dot_u8i8(a: &[u8], w: &[i8]) -> i32 {
    a.iter()
        .zip(w)
        .map(|(a, w)| i32::from(*a) * i32::from(*w))
        .fold(0i32, i32::wrapping_add)
}

/// Row-major `y[r] = sum_c w[r*cols + c] * x[c]`.
pub fn matvec(w: &[f32], x: &[f32], y: &mut [f32], rows: usize, cols: usize) {
    assert!(w.len() >= rows * cols && x.len() >= cols && y.len() >= rows);
    for (r, out) in y.iter_mut().enumerate().take(rows) {
        *out = dot_f32(&w[r * cols..(r + 1) * cols], &x[..cols]);
    }
}

/// f32 dot product with 8 partial sums.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Read-stream reduction used for the memory-bandwidth benchmark (wrapping sum, 4 lanes).
pub fn sum_u64(buf: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let chunks = buf.chunks_exact(4);
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |s, v| s.wrapping_add(*v));
    for c in chunks {
        for k in 0..4 {
            acc[k] = acc[k].wrapping_add(c[k]);
        }
    }
    acc.iter().fold(tail, |s, v| s.wrapping_add(*v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_half_for_all_values() {
        for bits in 0..=u16::MAX {
            let ours = f16_to_f32(bits);
            let theirs = half::f16::from_bits(bits).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{bits:#x}");
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{bits:#x}");
            }
        }
    }

    #[test]
    fn f16_encoding_round_trips_normals() {
        for v in [1.0f32, -0.5, 0.099_975_586, 1000.0, -3.140_625] {
            assert_eq!(f16_to_f32(f32_to_f16_approx(v)), v);
        }
        assert_eq!(f32_to_f16_approx(1e-30), 0);
    }

    #[test]
    fn reference_kernels() {
        assert_eq!(dot_u8i8(&[1, 2, 255], &[3, -4, -1]), 3 - 8 - 255);
        let w: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let mut y = [0.0; 2];
        matvec(&w, &[1.0, 1.0, 2.0], &mut y, 2, 3);
        assert_eq!(y, [5.0, 17.0]);
        assert_eq!(sum_u64(&[1, 2, 3, 4, 5]), 15);
        assert!(fma_peak(10, 0.5, 1.0).is_finite());
        let wh: Vec<u16> = [1.0f32, 2.0, 3.0]
            .iter()
            .map(|v| f32_to_f16_approx(*v))
            .collect();
        assert_eq!(dot_f16(&wh, &[1.0, 1.0, 1.0]), 6.0);
    }
}
