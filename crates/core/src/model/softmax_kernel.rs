//! Causal softmax on plain slices: rows of attention scores `[.., seq, seq]` where row `i` of each
//! `[seq, seq]` block attends to positions `0..=i`; later positions get probability exactly 0
//! (the same as masking them with −∞ first). Forward and backward, in 16-lane chunks with the
//! scan's branch-free `exp`; lane sums reduce in a fixed pairwise order, so every
//! [`ScanIsa`] path gives the same bits.
//!
//! Forward: `y = exp(x − max) / Σ exp(x − max)` over the row's prefix. Backward:
//! `∂x = y ⊙ (∂y − Σ ∂y ⊙ y)`.

use super::lanes::{dot, exp_into, isa_variants, max};
use super::scan_kernel::{ScanIsa, clamp_isa};

/// Causal softmax of `x [rows, seq]`, row `r` attending to `0..=(r mod seq)`.
pub fn causal_softmax(x: &[f32], seq: usize, isa: ScanIsa) -> Vec<f32> {
    assert!(
        seq > 0 && x.len().is_multiple_of(seq),
        "scores are [rows, seq]"
    );
    let mut y = vec![0.0; x.len()];
    match clamp_isa(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `clamp_isa` checked that this CPU has AVX-512F.
        ScanIsa::Avx512 => unsafe { forward_avx512(x, seq, &mut y) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `clamp_isa` checked that this CPU has AVX2.
        ScanIsa::Avx2 => unsafe { forward_avx2(x, seq, &mut y) },
        _ => forward(x, seq, &mut y),
    }
    y
}

/// Gradient of [`causal_softmax`] from its output `y` and the upstream `dy` (both `[rows, seq]`).
///
/// # Panics
/// If the lengths differ or are not a multiple of `seq`.
pub fn causal_softmax_backward(y: &[f32], dy: &[f32], seq: usize, isa: ScanIsa) -> Vec<f32> {
    if y.is_empty() && dy.is_empty() {
        return Vec::new();
    }
    assert!(
        seq > 0 && y.len().is_multiple_of(seq) && dy.len() == y.len(),
        "y and dy are [rows, seq]"
    );
    let mut dx = vec![0.0; y.len()];
    match clamp_isa(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `clamp_isa` checked that this CPU has AVX-512F.
        ScanIsa::Avx512 => unsafe { backward_avx512(y, dy, seq, &mut dx) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `clamp_isa` checked that this CPU has AVX2.
        ScanIsa::Avx2 => unsafe { backward_avx2(y, dy, seq, &mut dx) },
        _ => backward(y, dy, seq, &mut dx),
    }
    dx
}

isa_variants!(forward, forward_avx2, forward_avx512, (x: &[f32], seq: usize, y: &mut [f32]));
isa_variants!(backward, backward_avx2, backward_avx512,
    (y: &[f32], dy: &[f32], seq: usize, dx: &mut [f32]));

/// Every row: softmax over its causal prefix; the rest stays 0.
#[inline(always)]
fn forward(x: &[f32], seq: usize, y: &mut [f32]) {
    for (r, (xr, yr)) in x.chunks_exact(seq).zip(y.chunks_exact_mut(seq)).enumerate() {
        let n = r % seq + 1;
        let (xr, yr) = (&xr[..n], &mut yr[..n]);
        let m = max(xr);
        let inv = 1.0 / exp_into(xr, 1.0, m, yr);
        for v in yr.iter_mut() {
            *v *= inv;
        }
    }
}

/// Every row: `∂x = y ⊙ (∂y − Σ ∂y ⊙ y)` over its causal prefix; the rest stays 0.
#[inline(always)]
fn backward(y: &[f32], dy: &[f32], seq: usize, dx: &mut [f32]) {
    let rows = y.chunks_exact(seq).zip(dy.chunks_exact(seq));
    for (r, ((yr, dyr), dxr)) in rows.zip(dx.chunks_exact_mut(seq)).enumerate() {
        let n = r % seq + 1;
        let (yr, dyr, dxr) = (&yr[..n], &dyr[..n], &mut dxr[..n]);
        let d = dot(yr, dyr);
        for ((g, &a), &b) in dxr.iter_mut().zip(yr).zip(dyr) {
            *g = a * (b - d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut rng = crate::data::Rng::new(seed as u64);
        (0..n).map(|_| (rng.f32() - 0.5) * 10.0).collect()
    }

    #[test]
    fn equals_masked_softmax_and_its_gradient_on_every_path() {
        for &seq in &[1usize, 7, 16, 33] {
            let rows = 3 * seq;
            let x = data(rows * seq, seq as u32);
            let dy = data(rows * seq, 7 + seq as u32);
            let mut first = None;
            for isa in ScanIsa::available() {
                let y = causal_softmax(&x, seq, isa);
                let dx = causal_softmax_backward(&y, &dy, seq, isa);
                for r in 0..rows {
                    let n = r % seq + 1;
                    let xr = &x[r * seq..r * seq + n];
                    let m = xr.iter().fold(f64::MIN, |a, &b| a.max(b as f64));
                    let s: f64 = xr.iter().map(|&v| (v as f64 - m).exp()).sum();
                    let p: Vec<f64> = xr.iter().map(|&v| (v as f64 - m).exp() / s).collect();
                    let dot: f64 = (0..n).map(|j| p[j] * dy[r * seq + j] as f64).sum();
                    for j in 0..seq {
                        let (want_y, want_dx) = if j < n {
                            (p[j], p[j] * (dy[r * seq + j] as f64 - dot))
                        } else {
                            (0.0, 0.0)
                        };
                        let (gy, gdx) = (y[r * seq + j] as f64, dx[r * seq + j] as f64);
                        assert!((gy - want_y).abs() <= 1e-6, "seq {seq} {isa:?} y[{r},{j}]");
                        assert!(
                            (gdx - want_dx).abs() <= 1e-5,
                            "seq {seq} {isa:?} dx[{r},{j}]"
                        );
                        if j >= n {
                            assert_eq!((gy, gdx), (0.0, 0.0), "masked entries are exactly 0");
                        }
                    }
                }
                match &first {
                    None => first = Some((y, dx)),
                    Some(f) => assert_eq!(f, &(y, dx), "seq {seq}: {isa:?} differs"),
                }
            }
        }
    }
}
