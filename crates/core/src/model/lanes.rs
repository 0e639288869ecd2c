//! Row helpers over [`W`]-lane chunks shared by the fused training kernels (loss, softmax): they
//! vectorize when inlined into a `#[target_feature]` function, and reduce lanes in a fixed
//! pairwise order so every instruction-set path gives the same bits.

use super::scan_kernel::{W, exp_lanes};

/// Per-ISA builds of a generic kernel: `$avx2` and `$avx512` call `$generic` compiled with AVX2
/// and AVX-512F enabled, so its `#[inline(always)]` lane loops vectorize for that path (call them
/// only where the CPU has the feature).
macro_rules! isa_variants {
    ($vis:vis $generic:ident, $avx2:ident, $avx512:ident, ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        /// The generic kernel compiled for AVX2 (call only where the CPU has it).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        $vis fn $avx2($($arg: $ty),*) $(-> $ret)? {
            $generic($($arg),*)
        }
        /// The generic kernel compiled for AVX-512F (call only where the CPU has it).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        $vis fn $avx512($($arg: $ty),*) $(-> $ret)? {
            $generic($($arg),*)
        }
    };
}
pub(crate) use isa_variants;

/// `dst = exp(src·scale − shift)` (`exp` as [`exp_lanes`], but exactly 0 below −87.3, where
/// `exp_lanes` saturates at ~1e-38 — so −∞ inputs get weight 0); returns `Σ dst`.
#[inline(always)]
pub(crate) fn exp_into(src: &[f32], scale: f32, shift: f32, dst: &mut [f32]) -> f32 {
    debug_assert_eq!(src.len(), dst.len());
    let mut acc = [0.0; W];
    let mut s = src.chunks_exact(W);
    let mut d = dst.chunks_exact_mut(W);
    for (sc, dc) in (&mut s).zip(&mut d) {
        let mut arg = [0.0; W];
        for k in 0..W {
            arg[k] = sc[k] * scale - shift;
        }
        let e = flush(&arg, exp_lanes(&arg));
        dc.copy_from_slice(&e);
        for k in 0..W {
            acc[k] += e[k];
        }
    }
    let (sr, dr) = (s.remainder(), d.into_remainder());
    if !sr.is_empty() {
        let mut arg = [0.0; W];
        for (a, &v) in arg.iter_mut().zip(sr) {
            *a = v * scale - shift;
        }
        let e = flush(&arg, exp_lanes(&arg));
        dr.copy_from_slice(&e[..sr.len()]);
        for k in 0..sr.len() {
            acc[k] += e[k];
        }
    }
    reduce(acc, |a, b| a + b)
}

/// `e` with lanes whose argument is below −87.3 (−∞ included) set to 0.
#[inline(always)]
fn flush(arg: &[f32; W], mut e: [f32; W]) -> [f32; W] {
    for k in 0..W {
        e[k] = if arg[k] < -87.3 { 0.0 } else { e[k] };
    }
    e
}

/// Maximum of `x` (lane maxima, then a fixed pairwise reduction); −∞ for an empty slice.
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; W];
    let mut chunks = x.chunks_exact(W);
    for c in &mut chunks {
        for k in 0..W {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    for (k, &v) in chunks.remainder().iter().enumerate() {
        acc[k] = if v > acc[k] { v } else { acc[k] };
    }
    reduce(acc, |a, b| if b > a { b } else { a })
}

/// `Σ a·b` (lane sums, fixed reduction).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0; W];
    let mut ac = a.chunks_exact(W);
    let mut bc = b.chunks_exact(W);
    for (x, y) in (&mut ac).zip(&mut bc) {
        for k in 0..W {
            acc[k] += x[k] * y[k];
        }
    }
    for (k, (&x, &y)) in ac.remainder().iter().zip(bc.remainder()).enumerate() {
        acc[k] += x * y;
    }
    reduce(acc, |a, b| a + b)
}

/// Reduces the lanes pairwise in a fixed order with `f`.
#[inline(always)]
pub(crate) fn reduce(mut s: [f32; W], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut w = W / 2;
    while w > 0 {
        for k in 0..w {
            s[k] = f(s[k], s[k + w]);
        }
        w /= 2;
    }
    s[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_match_plain_loops_on_odd_lengths() {
        for n in [0usize, 1, 15, 16, 17, 40] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want_max = a.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&a), want_max);
            let want_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - want_dot).abs() <= 1e-5);
            let mut e = vec![0.0; n];
            let s = exp_into(&a, 0.5, 1.0, &mut e);
            for (x, y) in a.iter().zip(&e) {
                assert!((y - (x * 0.5 - 1.0).exp()).abs() <= 1e-6 * y.max(1.0));
            }
            assert!((s - e.iter().sum::<f32>()).abs() <= 1e-5 * s.max(1.0));
        }
        let mut e = [1.0; 3];
        let s = exp_into(&[f32::NEG_INFINITY, -200.0, 0.0], 1.0, 0.0, &mut e);
        assert_eq!(
            (e, s),
            ([0.0, 0.0, 1.0], 1.0),
            "−∞ and deep negatives weigh exactly 0"
        );
    }
}
