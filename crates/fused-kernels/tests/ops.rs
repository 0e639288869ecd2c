//! Op tests (every SIMD level vs scalar) and the int8-activation error report.

mod common;

use common::*;
use squish_kernels::*;

/// SIMD ops use a polynomial exp (≤ ~2e-7 relative); bound vs scalar std exp.
const OP_BOUND: f32 = 2e-6;

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn ops_match_scalar() {
    let s = Ops::new(Some(SimdLevel::Scalar));
    for l in dispatch::supported() {
        let o = Ops::new(Some(l));
        for seed in 0..100 {
            let mut rng = Rng::new(seed);
            let n = rng.pick(&[1, 3, 8, 17, 64, 172, 512]);
            let (x, w) = (rng.vec(n), rng.vec(n));
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            s.rmsnorm(&mut a, &x, &w, 1e-5).unwrap();
            o.rmsnorm(&mut b, &x, &w, 1e-5).unwrap();
            close(&b, &a, 1e-6, "rmsnorm");
            let big: Vec<f32> = x.iter().map(|v| v * 30.0).collect();
            let (mut a, mut b) = (big.clone(), big.clone());
            s.softmax(&mut a);
            o.softmax(&mut b);
            close(&b, &a, OP_BOUND, "softmax");
            assert!((b.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            s.swiglu(&mut a, &big, &w).unwrap();
            o.swiglu(&mut b, &big, &w).unwrap();
            close(&b, &a, OP_BOUND, "swiglu");
        }
    }
}

/// Measures the error int8 activations add on top of weight quantization:
/// relative L2 error ‖y_q8 − y_f32act‖ / ‖y_f32act‖ and worst |Δ| / Σ|w·x|,
/// on Gaussian-like activations (and a heavy-tailed variant with outliers).
#[test]
fn int8_activation_error_report() {
    eprintln!("format      shape     group  act-dist   relL2      max|Δ|/Σ|wx|");
    for &f in &FORMATS {
        for &(out, inp, g) in &[
            (768usize, 256usize, 32usize),
            (172, 64, 64),
            (64, 172, 32),
            (512, 64, 64),
        ] {
            for heavy in [false, true] {
                let mut rng = Rng::new(77);
                let w =
                    PackedWeight::from_quant(rand_quant(&mut rng, f, out, inp, g).parts()).unwrap();
                let (mut num, mut den, mut worst) = (0f64, 0f64, 0f64);
                for _ in 0..8 {
                    let mut x = rng.vec(inp);
                    if heavy {
                        for _ in 0..inp / 32 + 1 {
                            let i = rng.below(inp);
                            x[i] *= 20.0;
                        }
                    }
                    let (mut yf, mut yq) = (vec![0.0; out], vec![0.0; out]);
                    let mut s = Scratch::new();
                    w.matvec(&x, &mut yf, &mut s).unwrap();
                    w.matvec_q8(&x, &mut yq, &mut s).unwrap();
                    let (_, mag) = ref_matvec(&w, &x);
                    for ((a, b), m) in yq.iter().zip(&yf).zip(&mag) {
                        num += ((a - b) as f64).powi(2);
                        den += (*b as f64).powi(2);
                        worst = worst.max((a - b).abs() as f64 / m);
                    }
                }
                let rel = (num / den).sqrt();
                let dist = if heavy { "outliers" } else { "gauss" };
                eprintln!("{f:?}  {out}x{inp}  g={g:<4} {dist:9}  {rel:.2e}   {worst:.2e}");
                // Documented bounds (README): relL2 < 1% (gauss) / 5% (outliers);
                // max |Δ| / Σ|w·x| < 2% (gauss). With outliers a single output can be
                // off by much more (small entries of an outlier's group round to 0).
                let (b_rel, b_worst) = if heavy { (5e-2, 1.0) } else { (1e-2, 2e-2) };
                assert!(
                    rel < b_rel && worst < b_worst,
                    "{f:?} {out}x{inp} {dist}: {rel} {worst}"
                );
            }
        }
    }
}
