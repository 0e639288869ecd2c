//! One int8 staging for several weights: Q/K/V or gate/up that cannot be stacked into one
//! weight (their codebooks differ) but read the same staged activations are normed and
//! quantized once ([`stage_shared`]), then each weight runs into its own columns
//! ([`SharedStage::run`]).

use crate::dispatch::{self, SimdLevel};
use crate::error::{KernelError, Result, check_len};
use crate::matmul::run_rows;
use crate::pack::PackedWeight;
use crate::scratch::{RmsNorm, Scratch, Staged};

/// Activations normed and quantized to int8 once for several weights that read the same
/// staging ([`stage_shared`]), e.g. Q/K/V or gate/up whose codebooks differ, so they cannot be
/// stacked into one weight.
pub(crate) struct SharedStage<'s> {
    st: Staged<'s>,
    n: usize,
    level: SimdLevel,
    key: StagingKey,
}

/// What an int8 staging depends on: input width, code width and group layout.
type StagingKey = (usize, usize, usize, usize, usize, usize);

/// The int8 staging `w` reads (`None`: no int8 form).
fn staging_key(w: &PackedWeight) -> Option<StagingKey> {
    w.q8_repr()
        .map(|q| (w.inp, q.bits, q.group, q.n_groups, q.gp, q.row_chunks))
}

/// Stages `x [n, in]` (optionally normed) to int8 once for `ws`, on the calling thread; `None`
/// when the weights do not all read the same staging (then each is run on its own).
pub(crate) fn stage_shared<'s, 'w>(
    ws: impl IntoIterator<Item = &'w PackedWeight>,
    x: &'s [f32], // [n, in]
    n: usize,
    scratch: &'s mut Scratch,
    norm: Option<RmsNorm<'_>>,
    level: SimdLevel,
) -> Result<Option<SharedStage<'s>>> {
    let mut ws = ws.into_iter();
    let Some(w0) = ws.next() else {
        return Ok(None);
    };
    let Some(key) = staging_key(w0) else {
        return Ok(None);
    };
    if ws.any(|w| staging_key(w) != Some(key)) {
        return Ok(None);
    }
    check_len("x", n * w0.inp, x.len())?;
    if let Some(nm) = norm {
        check_len("norm weight", w0.inp, nm.weight.len())?;
    }
    let level = dispatch::resolve(Some(level));
    let st = scratch.stage_q8(w0, x, n, norm, dispatch::has_avx2(level));
    Ok(Some(SharedStage { st, n, level, key }))
}

impl SharedStage<'_> {
    /// `y[t·ldy + r] = (W · x_t)[r]` for one of the weights the activations were staged for.
    pub(crate) fn run(&self, w: &PackedWeight, y: &mut [f32], ldy: usize) -> Result<()> {
        if staging_key(w) != Some(self.key) {
            return Err(KernelError::Shape(
                "SharedStage::run: the weight reads another staging".into(),
            ));
        }
        if self.n > 0 {
            if ldy < w.out {
                return Err(KernelError::Shape(format!(
                    "output stride {ldy} < {} rows",
                    w.out
                )));
            }
            let need = (self.n - 1) * ldy + w.out;
            if y.len() < need {
                return Err(KernelError::Length {
                    what: "y",
                    expected: need,
                    got: y.len(),
                });
            }
            run_rows(self.level, w, self.st, self.n, 0, w.out, y, ldy);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codebook::CodebookParts;
    use crate::matmul::{Activations, MatOpts};
    use half::f16;
    use squish_core::codebook::CbTensor;
    use squish_core::data::Rng;

    /// A 4-bit codebook weight `[out, inp]` (group 16) with its own random levels.
    fn cb4(rng: &mut Rng, out: usize, inp: usize) -> PackedWeight {
        let mut levels: Vec<f32> = (0..16).map(|_| rng.f32() * 2.0 - 1.0).collect();
        levels.sort_by(f32::total_cmp);
        let codes: Vec<u8> = (0..out * inp).map(|_| rng.below(16) as u8).collect();
        let scales = (0..out * inp.div_ceil(16))
            .map(|_| f16::from_f32(0.01 + rng.f32()))
            .collect();
        let c = CbTensor::from_codes(4, out, inp, 16, &codes, scales, levels).unwrap();
        PackedWeight::from_codebook(CodebookParts {
            bits: 4,
            out,
            inp,
            group: 16,
            codes: &c.codes,
            scales: &c.scales,
            levels: &c.levels,
        })
        .unwrap()
    }

    /// Staging once for weights with different codebooks (Q/K/V-like, written side by side into
    /// one row) gives each weight's own int8 matmul bit for bit; other stagings are refused.
    #[test]
    fn shared_staging_equals_staging_per_weight() {
        let mut rng = Rng::new(3);
        let (inp, outs) = (40, [24usize, 8, 8]);
        let ws: Vec<PackedWeight> = outs.iter().map(|&o| cb4(&mut rng, o, inp)).collect();
        let nw: Vec<f32> = (0..inp).map(|_| 0.5 + rng.f32()).collect();
        let norm = Some(RmsNorm {
            weight: &nw,
            eps: 1e-5,
        });
        let tot: usize = outs.iter().sum();
        for level in dispatch::supported() {
            for n in [1usize, 5, 9] {
                let x: Vec<f32> = (0..n * inp).map(|_| rng.f32() * 2.0 - 1.0).collect();
                let opts = MatOpts {
                    act: Activations::Int8,
                    level: Some(level),
                    norm,
                    threads: 1,
                };
                let mut want = vec![0f32; n * tot];
                let mut col = 0;
                for w in &ws {
                    let mut y = vec![0f32; n * w.out];
                    w.matmul_opts(&x, n, &mut y, &mut Scratch::new(), &opts)
                        .unwrap();
                    for t in 0..n {
                        want[t * tot + col..t * tot + col + w.out]
                            .copy_from_slice(&y[t * w.out..(t + 1) * w.out]);
                    }
                    col += w.out;
                }
                let mut s = Scratch::new();
                let sh = stage_shared(&ws, &x, n, &mut s, norm, level)
                    .unwrap()
                    .expect("same staging");
                let mut got = vec![0f32; n * tot];
                let mut col = 0;
                for w in &ws {
                    sh.run(w, &mut got[col..], tot).unwrap();
                    col += w.out;
                }
                assert!(got == want, "{level:?} n={n}");
                assert!(sh.run(&ws[0], &mut got[..1], tot).is_err(), "short output");
            }
        }
        let other = cb4(&mut rng, 8, 48);
        let x = vec![0.5f32; inp];
        let mut s = Scratch::new();
        let none = stage_shared([&ws[0], &other], &x, 1, &mut s, None, SimdLevel::Scalar);
        assert!(
            none.unwrap().is_none(),
            "different input widths share no staging"
        );
    }
}
