//! The token loss on plain slices: cross-entropy, optionally mixed with the distillation KL to a
//! teacher, and its gradient with respect to the logits, in one pass over each row of logits.
//!
//! For a row of logits `z [vocab]` with target `y`, `p = softmax(z)`:
//! `ce = logsumexp(z) − z_y`, `∂ce/∂z = p − onehot(y)`. With a teacher's logits `t` and temperature
//! `τ`, `p_τ = softmax(z/τ)`, `q = softmax(t/τ)`: `kl = Σ q (log q − log p_τ)`,
//! `∂(τ²·kl)/∂z = τ (p_τ − q)`. The loss is `((1 − α) Σ ce + α τ² Σ kl) / rows` (α = 0 without a
//! teacher), matching [`super::cross_entropy`] and [`super::distill_kl`] up to float rounding.
//!
//! Rows are processed in 16-lane chunks with the scan's branch-free `exp`, so the loops
//! vectorize; lane sums are reduced in a fixed pairwise order, and every [`ScanIsa`] path gives
//! the same bits.

use crate::model::lanes::{dot, exp_into, isa_variants, max};
use crate::model::scan_kernel::{ScanIsa, clamp_isa};
use crate::{Error, Result};

/// How the teacher term is mixed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Distill {
    /// Weight of the KL term; the cross-entropy gets `1 − alpha`.
    pub alpha: f32,
    /// Temperature `τ` (> 0); the KL is scaled by `τ²`.
    pub tau: f32,
}

/// The loss of a batch of rows and its gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct LossGrad {
    /// The mean loss per row (nats).
    pub loss: f64,
    /// `∂loss/∂logits`, laid out like the logits `[rows, vocab]`.
    pub grad: Vec<f32>,
}

/// Loss and gradient of `logits [rows, vocab]` against `targets [rows]`, with the teacher term
/// when `teacher = Some((teacher logits [rows, vocab], mix))`, on the `isa` path (clamped to
/// what the CPU supports). Errors on mismatched lengths, a target outside the vocabulary, or a
/// non-positive temperature.
pub fn token_loss(
    logits: &[f32],
    vocab: usize,
    targets: &[u32],
    teacher: Option<(&[f32], Distill)>,
    isa: ScanIsa,
) -> Result<LossGrad> {
    let rows = targets.len();
    if vocab == 0 || rows == 0 || rows.checked_mul(vocab) != Some(logits.len()) {
        return Err(Error::invalid(format!(
            "token loss: {} logits for {rows} targets over a vocabulary of {vocab}",
            logits.len()
        )));
    }
    if let Some(bad) = targets.iter().find(|&&y| y as usize >= vocab) {
        return Err(Error::invalid(format!(
            "token loss: target {bad} outside the vocabulary of {vocab}"
        )));
    }
    if let Some((t, mix)) = teacher {
        if t.len() != logits.len() {
            return Err(Error::invalid(format!(
                "token loss: {} teacher logits for {} student logits",
                t.len(),
                logits.len()
            )));
        }
        let ok_tau = mix.tau > 0.0 && mix.tau.is_finite() && (1.0 / mix.tau).is_finite();
        if !(ok_tau && mix.alpha.is_finite()) {
            return Err(Error::invalid(format!(
                "token loss: distillation needs a finite temperature > 0 and a finite weight, got τ = {} and α = {}",
                mix.tau, mix.alpha
            )));
        }
    }
    let mut grad = vec![0.0; logits.len()];
    let args = Args {
        logits,
        vocab,
        targets,
        teacher,
    };
    let (ce, kl) = match clamp_isa(isa) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `clamp_isa` checked that this CPU has AVX-512F.
        ScanIsa::Avx512 => unsafe { rows_avx512(&args, &mut grad) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `clamp_isa` checked that this CPU has AVX2.
        ScanIsa::Avx2 => unsafe { rows_avx2(&args, &mut grad) },
        _ => all_rows(&args, &mut grad),
    };
    let alpha = teacher.map_or(0.0, |(_, m)| m.alpha as f64);
    let tau = teacher.map_or(1.0, |(_, m)| m.tau as f64);
    let loss = ((1.0 - alpha) * ce + alpha * tau * tau * kl) / rows as f64;
    Ok(LossGrad { loss, grad })
}

/// The checked inputs of [`token_loss`].
struct Args<'a> {
    logits: &'a [f32],
    vocab: usize,
    targets: &'a [u32],
    teacher: Option<(&'a [f32], Distill)>,
}

isa_variants!(all_rows, rows_avx2, rows_avx512, (args: &Args, grad: &mut [f32]) -> (f64, f64));

/// Every row: `(Σ ce, Σ kl)`, writing each row's gradient.
#[inline(always)]
fn all_rows(args: &Args, grad: &mut [f32]) -> (f64, f64) {
    let v = args.vocab;
    let inv_rows = 1.0 / args.targets.len() as f32;
    let mut scratch = vec![0.0; if args.teacher.is_some() { 2 * v } else { 0 }];
    let (mut ce, mut kl) = (0.0f64, 0.0f64);
    for (r, (g, &y)) in grad.chunks_exact_mut(v).zip(args.targets).enumerate() {
        let z = &args.logits[r * v..(r + 1) * v];
        let alpha = args.teacher.map_or(0.0, |(_, m)| m.alpha);
        let m = max(z);
        if alpha != 1.0 {
            // Cross-entropy: g = exp(z − max) first, then scaled to (1 − α)(p − onehot)/rows.
            // (Pure distillation, α = 1, skips it: its weight is 0 and `g` starts at 0.)
            let s = exp_into(z, 1.0, m, g);
            let lse = m + s.ln();
            ce += (lse - z[y as usize]) as f64;
            scale(g, (1.0 - alpha) * inv_rows / s);
            g[y as usize] -= (1.0 - alpha) * inv_rows;
        }
        if let Some((teacher, mix)) = args.teacher {
            let t = &teacher[r * v..(r + 1) * v];
            let inv_tau = 1.0 / mix.tau;
            let (ps, q) = scratch.split_at_mut(v);
            let ms = m * inv_tau;
            let ss = exp_into(z, inv_tau, ms, ps);
            let mt = max(t) * inv_tau;
            let st = exp_into(t, inv_tau, mt, q);
            scale(q, 1.0 / st);
            // Σ q (log q − log p_τ) = Σ q (t − z)/τ + lse_τ(z) − lse_τ(t), with Σ q = 1.
            let cross = (dot(q, t) - dot(q, z)) * inv_tau;
            kl += (cross + (ms - mt) + (ss / st).ln()) as f64;
            let k = alpha * mix.tau * inv_rows;
            axpy_softmax_diff(g, ps, 1.0 / ss, q, k);
        }
    }
    (ce, kl)
}

/// `x *= c`.
#[inline(always)]
fn scale(x: &mut [f32], c: f32) {
    for v in x {
        *v *= c;
    }
}

/// `g += k (e·inv_s − q)`: adds `k (p_τ − q)` with `p_τ = e / s`.
#[inline(always)]
fn axpy_softmax_diff(g: &mut [f32], e: &[f32], inv_s: f32, q: &[f32], k: f32) {
    for ((g, &e), &q) in g.iter_mut().zip(e).zip(q) {
        *g += k * (e * inv_s - q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook formulas in f64, one row at a time.
    fn reference(z: &[f32], v: usize, y: &[u32], t: Option<(&[f32], Distill)>) -> (f64, Vec<f64>) {
        let rows = y.len();
        let softmax = |row: &[f32], tau: f64| -> (Vec<f64>, f64) {
            let m = row.iter().map(|&x| x as f64 / tau).fold(f64::MIN, f64::max);
            let s: f64 = row.iter().map(|&x| (x as f64 / tau - m).exp()).sum();
            let p = row
                .iter()
                .map(|&x| (x as f64 / tau - m).exp() / s)
                .collect();
            (p, m + s.ln())
        };
        let (mut loss, mut grad) = (0.0, vec![0.0; z.len()]);
        let alpha = t.map_or(0.0, |(_, m)| m.alpha as f64);
        for r in 0..rows {
            let zr = &z[r * v..(r + 1) * v];
            let (p, lse) = softmax(zr, 1.0);
            let yi = y[r] as usize;
            loss += (1.0 - alpha) * (lse - zr[yi] as f64);
            for j in 0..v {
                let onehot = if j == yi { 1.0 } else { 0.0 };
                grad[r * v + j] += (1.0 - alpha) * (p[j] - onehot);
            }
            if let Some((tl, mix)) = t {
                let tau = mix.tau as f64;
                let tr = &tl[r * v..(r + 1) * v];
                let (ps, _) = softmax(zr, tau);
                let (q, _) = softmax(tr, tau);
                let kl: f64 = (0..v).map(|j| q[j] * (q[j].ln() - ps[j].ln())).sum();
                loss += alpha * tau * tau * kl;
                for j in 0..v {
                    grad[r * v + j] += alpha * tau * (ps[j] - q[j]);
                }
            }
        }
        let n = rows as f64;
        (loss / n, grad.into_iter().map(|g| g / n).collect())
    }

    fn logits(n: usize, seed: u32, spread: f32) -> Vec<f32> {
        let mut rng = crate::data::Rng::new(seed as u64);
        (0..n).map(|_| (rng.f32() - 0.5) * spread).collect()
    }

    #[test]
    fn matches_the_formulas_on_every_path_and_width() {
        for &v in &[1usize, 5, 16, 17, 64, 173] {
            let rows = 7;
            let z = logits(rows * v, v as u32, 12.0);
            let t = logits(rows * v, 99 + v as u32, 8.0);
            let y: Vec<u32> = (0..rows).map(|r| ((r * 31 + 3) % v) as u32).collect();
            let mix = Distill {
                alpha: 0.7,
                tau: 2.0,
            };
            let pure = Distill {
                alpha: 1.0,
                tau: 1.0,
            };
            for teacher in [None, Some((&t[..], mix)), Some((&t[..], pure))] {
                let (want_loss, want_grad) = reference(&z, v, &y, teacher);
                let mut first: Option<LossGrad> = None;
                for isa in ScanIsa::available() {
                    let got = token_loss(&z, v, &y, teacher, isa).unwrap();
                    let tol = 1e-5 * want_loss.abs().max(1.0);
                    assert!(
                        (got.loss - want_loss).abs() <= tol,
                        "v {v} {isa:?}: loss {} vs {want_loss}",
                        got.loss
                    );
                    for (g, w) in got.grad.iter().zip(&want_grad) {
                        assert!((*g as f64 - w).abs() <= 1e-6, "v {v} {isa:?}: {g} vs {w}");
                    }
                    match &first {
                        None => first = Some(got),
                        Some(f) => assert_eq!(f, &got, "v {v}: {isa:?} differs from baseline"),
                    }
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let z = [0.0f32; 8];
        assert!(token_loss(&z, 4, &[0, 4], None, ScanIsa::Baseline).is_err());
        assert!(token_loss(&z, 4, &[0], None, ScanIsa::Baseline).is_err());
        assert!(token_loss(&z, 0, &[], None, ScanIsa::Baseline).is_err());
        let bad = Distill {
            alpha: 0.5,
            tau: 0.0,
        };
        assert!(token_loss(&z, 4, &[0, 1], Some((&z, bad)), ScanIsa::Baseline).is_err());
        let good = Distill {
            alpha: 0.5,
            tau: 1.0,
        };
        assert!(token_loss(&z, 4, &[0, 1], Some((&z, good)), ScanIsa::Baseline).is_ok());
        assert!(token_loss(&z, 4, &[0, 1], Some((&z[..4], good)), ScanIsa::Baseline).is_err());
        let tiny = Distill {
            alpha: 0.5,
            tau: 1e-45,
        };
        assert!(token_loss(&z, 4, &[0, 1], Some((&z, tiny)), ScanIsa::Baseline).is_err());
    }
}
