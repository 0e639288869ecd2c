//! Codebook weights (2/3/4-bit codes into a per-tensor table): every kernel path against the
//! format's scalar reference (`CbTensor::vec_dot`) on widths 1, 17, 64 and 172 with short last
//! groups, exact repacking round trips, thread invariance, clear errors for forged parts, and a
//! whole Llama model on codebook weights against the same model on their dequantized F32 values.

mod rt_common;

use half::f16;
use rt_common::*;
use squish_core::checkpoint::{TensorData, WeightTensor, Weights};
use squish_core::codebook::CbTensor;
use squish_core::config::{LlamaConfig, ModelConfig};
use squish_core::data::Rng;
use squish_kernels::runtime::{Runtime, RuntimeOptions};
use squish_kernels::{
    Activations, CodebookParts, MatOpts, PackedWeight, RawWeight, Scratch, SimdLevel, dispatch,
};

/// A random codebook tensor: sorted random levels, random codes, positive scales.
fn random_cb(rng: &mut Rng, bits: u32, rows: usize, cols: usize, group: usize) -> CbTensor {
    let mut levels = uniform(rng, 1 << bits, 1.0);
    levels.sort_by(f32::total_cmp);
    let codes: Vec<u8> = (0..rows * cols)
        .map(|_| rng.below(1 << bits) as u8)
        .collect();
    let ng = cols.div_ceil(group);
    let scales = (0..rows * ng)
        .map(|_| f16::from_f32(0.01 + rng.f32()))
        .collect();
    CbTensor::from_codes(bits, rows, cols, group, &codes, scales, levels).unwrap()
}

fn parts(c: &CbTensor) -> CodebookParts<'_> {
    CodebookParts {
        bits: c.bits,
        out: c.rows,
        inp: c.cols,
        group: c.group,
        codes: &c.codes,
        scales: &c.scales,
        levels: &c.levels,
    }
}

/// `Σ |terms|` of row `r`'s dot with `x` (the scale of its rounding error).
fn abs_dot(c: &CbTensor, r: usize, x: &[f32]) -> f32 {
    let d = c.dequantize();
    d[r * c.cols..(r + 1) * c.cols]
        .iter()
        .zip(x)
        .map(|(a, b)| (a * b).abs())
        .sum()
}

/// 13-row codebook weights at 2, 3 and 4 bits on widths 1, 17, 64 and 172, each with groups as
/// wide as the row, 16 and 64 (short last groups included).
fn odd_width_cases(rng: &mut Rng) -> Vec<(CbTensor, PackedWeight)> {
    let mut cases = Vec::new();
    for bits in 2..=4u32 {
        for &inp in &[1usize, 17, 64, 172] {
            for &group in &[inp, 16.min(inp), 64.min(inp)] {
                let c = random_cb(rng, bits, 13, inp, group);
                let w = PackedWeight::from_codebook(parts(&c)).unwrap();
                cases.push((c, w));
            }
        }
    }
    cases
}

#[test]
fn every_path_equals_the_scalar_reference_on_odd_widths() {
    let mut rng = Rng::new(5);
    let levels = dispatch::supported();
    for (c, w) in odd_width_cases(&mut rng) {
        let (bits, rows, inp, group) = (c.bits, c.rows, c.cols, c.group);
        for n in [1usize, 5] {
            let x = uniform(&mut rng, n * inp, 1.0);
            for &level in &levels {
                let mut y = vec![0f32; n * rows];
                let opts = MatOpts {
                    level: Some(level),
                    ..MatOpts::default()
                };
                w.matmul_opts(&x, n, &mut y, &mut Scratch::new(), &opts)
                    .unwrap();
                for t in 0..n {
                    let xt = &x[t * inp..(t + 1) * inp];
                    for r in 0..rows {
                        let (got, want) = (y[t * rows + r], c.vec_dot(r, xt));
                        // Two summation orders of `inp + n_groups` rounded terms.
                        let tol =
                            2.0 * (inp + c.n_groups()) as f32 * f32::EPSILON * abs_dot(&c, r, xt)
                                + 1e-12;
                        assert!(
                            (got - want).abs() <= tol,
                            "{level:?} cb{bits} in={inp} g={group} n={n} [{t},{r}]: {got} vs {want}"
                        );
                        if level == squish_kernels::SimdLevel::Scalar {
                            assert_eq!(got, want, "scalar path is the reference");
                        }
                    }
                }
            }
        }
    }
}

/// `y = W·x` for `n` tokens with int8 activations on `level`.
fn run_q8(w: &PackedWeight, x: &[f32], n: usize, level: SimdLevel) -> Vec<f32> {
    let mut y = vec![0f32; n * w.out()];
    let opts = MatOpts {
        act: Activations::Int8,
        level: Some(level),
        ..MatOpts::default()
    };
    w.matmul_opts(x, n, &mut y, &mut Scratch::new(), &opts)
        .unwrap();
    y
}

/// The most that rounding the activations (per group, step `absmax/127`) and the levels (per
/// tensor, step `max|L|/127`) to int8 can move row `r`'s dot with `x`, plus float rounding.
fn int8_bound(c: &CbTensor, r: usize, x: &[f32]) -> f32 {
    let delta = c.levels.iter().fold(0f32, |m, l| m.max(l.abs())) / 127.0;
    let mut bound = 0f32;
    for g in 0..c.n_groups() {
        let cols = g * c.group..((g + 1) * c.group).min(c.cols);
        let a = x[cols.clone()].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        let s = c.scales[r * c.n_groups() + g].to_f32();
        for col in cols {
            let l = c.levels[c.code(r, col) as usize].abs();
            bound += s * (delta / 2.0 * (x[col].abs() + a / 2.0) + l * a / 2.0);
        }
    }
    1.01 * bound + 4.0 * (c.cols + c.n_groups()) as f32 * f32::EPSILON * abs_dot(c, r, x) + 1e-6
}

/// Int8 activations on codebook weights (the levels rounded to int8, decoded through a table in
/// registers): every x86 path gives the same bits for any token count (exact integer sums), and
/// every path, the scalar one included, stays within the rounding bound of the exact dot.
#[test]
fn int8_activations_agree_across_paths_within_the_rounding_bound() {
    let mut rng = Rng::new(21);
    let levels = dispatch::supported();
    for (c, w) in odd_width_cases(&mut rng) {
        let (bits, rows, inp, group) = (c.bits, c.rows, c.cols, c.group);
        for n in [1usize, 5, 8, 12, 17] {
            let x = uniform(&mut rng, n * inp, 1.0);
            let ys: Vec<Vec<f32>> = levels.iter().map(|&l| run_q8(&w, &x, n, l)).collect();
            let what = format!("cb{bits} in={inp} g={group} n={n}");
            let x86: Vec<(&SimdLevel, &Vec<f32>)> = levels
                .iter()
                .zip(&ys)
                .filter(|(l, _)| !matches!(l, SimdLevel::Scalar | SimdLevel::Neon))
                .collect();
            for (l, y) in x86.iter().skip(1) {
                assert!(*y == x86[0].1, "{what}: {l:?} vs {:?}", x86[0].0);
            }
            for (l, y) in levels.iter().zip(&ys) {
                for t in 0..n {
                    let xt = &x[t * inp..(t + 1) * inp];
                    for r in 0..rows {
                        let (got, want) = (y[t * rows + r], c.vec_dot(r, xt));
                        let bound = int8_bound(&c, r, xt);
                        assert!(
                            (got - want).abs() <= bound,
                            "{what} {l:?} [{t},{r}]: {got} vs {want} (bound {bound})"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn repacking_round_trips_exactly_and_get_dequantizes() {
    let mut rng = Rng::new(9);
    for bits in 2..=4u32 {
        for &(rows, inp, group) in &[
            (3usize, 17usize, 5usize),
            (2, 172, 64),
            (1, 1, 1),
            (4, 33, 33),
        ] {
            let c = random_cb(&mut rng, bits, rows, inp, group);
            let w = PackedWeight::from_codebook(parts(&c)).unwrap();
            let d = c.dequantize();
            for r in 0..rows {
                for col in 0..inp {
                    assert_eq!(w.get(r, col), d[r * inp + col]);
                }
            }
            assert_eq!(
                w.to_raw(),
                RawWeight::Codebook {
                    bits,
                    group,
                    codes: c.codes.clone(),
                    scales: c.scales.clone(),
                    levels: c.levels.clone(),
                }
            );
            assert_eq!(w.format_name(), format!("cb{bits}"));
        }
    }
}

#[test]
fn threads_do_not_change_the_bits() {
    let mut rng = Rng::new(3);
    let c = random_cb(&mut rng, 4, 64, 172, 64);
    let w = PackedWeight::from_codebook(parts(&c)).unwrap();
    for n in [1usize, 7] {
        let x = uniform(&mut rng, n * 172, 1.0);
        for act in [Activations::F32, Activations::Int8] {
            let run = |threads| {
                let mut y = vec![0f32; n * 64];
                let opts = MatOpts {
                    threads,
                    act,
                    ..MatOpts::default()
                };
                w.matmul_opts(&x, n, &mut y, &mut Scratch::new(), &opts)
                    .unwrap();
                y
            };
            assert_eq!(run(1), run(2), "n={n} {act:?}");
        }
    }
}

#[test]
fn forged_parts_are_clear_errors() {
    let mut rng = Rng::new(1);
    let c = random_cb(&mut rng, 3, 2, 17, 8);
    let short = &c.codes[..c.codes.len() - 1];
    let e = PackedWeight::from_codebook(CodebookParts {
        codes: short,
        ..parts(&c)
    });
    assert!(e.unwrap_err().to_string().contains("codes"));
    let nan = [0.0, 0.1, f32::NAN, 0.3, 0.4, 0.5, 0.6, 0.7];
    let e = PackedWeight::from_codebook(CodebookParts {
        levels: &nan,
        ..parts(&c)
    });
    assert!(e.unwrap_err().to_string().contains("finite"));
    let four = [0.0, 0.1, 0.2, 0.3];
    let e = PackedWeight::from_codebook(CodebookParts {
        levels: &four,
        ..parts(&c)
    });
    assert!(e.unwrap_err().to_string().contains("need 8"));
    let e = PackedWeight::from_codebook(CodebookParts {
        group: 0,
        ..parts(&c)
    });
    assert!(e.is_err());
    let bad_scale = vec![f16::INFINITY; c.scales.len()];
    let e = PackedWeight::from_codebook(CodebookParts {
        scales: &bad_scale,
        ..parts(&c)
    });
    assert!(e.unwrap_err().to_string().contains("not finite"));
}

/// A Llama on codebook weights gives the logits of the same model on the dequantized weights.
#[test]
fn llama_on_codebook_weights_matches_its_dequantized_f32_twin() {
    let c = LlamaConfig {
        dim: 48,
        hidden_dim: 86,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 61,
        seq_len: 40,
        shared_classifier: false,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let w = random_llama(&c, &[86, 86], 17);
    let toks = tokens(40, c.vocab_size, 2);
    for bits in 2..=4u32 {
        let mut lv: Vec<f32> = (0..1 << bits)
            .map(|k| ((k as f32 + 0.5) / (1 << bits) as f32 * 2.0 - 1.0).powi(3))
            .collect();
        lv.sort_by(f32::total_cmp);
        let (mut cbw, mut deq) = (Weights::new(), Weights::new());
        for (name, t) in w.iter() {
            let matmul = t.shape.len() == 2 && name.ends_with(".weight");
            if !matmul {
                cbw.insert(name.clone(), t.clone());
                deq.insert(name.clone(), t.clone());
                continue;
            }
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let q =
                CbTensor::from_float(&t.to_f32(), rows, cols, 32.min(cols), lv.clone()).unwrap();
            deq.insert(
                name.clone(),
                WeightTensor::f32(t.shape.clone(), q.dequantize()).unwrap(),
            );
            cbw.insert(
                name.clone(),
                WeightTensor {
                    shape: t.shape.clone(),
                    data: TensorData::Codebook(q),
                },
            );
        }
        let cfg = ModelConfig::Llama(c.clone());
        let logits = |w: &Weights, threads| {
            let opts = RuntimeOptions {
                threads,
                ..RuntimeOptions::default()
            };
            let mut rt = Runtime::from_weights(&cfg, w, opts).unwrap();
            let mut out = vec![0.0; toks.len() * c.vocab_size];
            rt.prefill_all(&toks, &mut out).unwrap();
            rt.reset();
            let mut stepped = Vec::new();
            for &t in &toks {
                stepped.extend_from_slice(rt.step(t).unwrap());
            }
            let e = max_diff(&stepped, &out);
            assert!(e <= 1e-4 * max_abs(&out).max(1.0), "step vs prefill: {e}");
            (out, rt.format_summary().to_string())
        };
        let (want, _) = logits(&deq, 1);
        let (got, summary) = logits(&cbw, 1);
        assert!(summary.contains(&format!("cb{bits}")), "{summary}");
        let e = max_diff(&got, &want);
        assert!(e <= 1e-4 * max_abs(&want).max(1.0), "cb{bits}: max|Δ| {e}");
        assert_eq!(logits(&cbw, 2).0, got, "threads");
    }
}
