//! Property tests: every SIMD path vs the scalar reference, pack round trips,
//! malformed inputs, matmul vs matvec, threads, fused norm.

mod common;

use common::*;
use half::f16;
use squish_kernels::*;

/// Bound for float-activation paths: |Δ| ≤ 1e-5 · M per output, where M = Σ|w·x|
/// for dense weights and Σ s·(u + z)·|x| for quantized ones (see `kernel_mag`).
const F_BOUND: f64 = 1e-5;
/// Bound for SIMD int8-activation paths vs the scalar int8-activation path.
const Q8_BOUND: f64 = 1e-6;

fn run(w: &PackedWeight, x: &[f32], n: usize, act: Activations, level: SimdLevel) -> Vec<f32> {
    let mut y = vec![f32::NAN; n * w.out()];
    let mut s = Scratch::new();
    let opts = MatOpts {
        act,
        level: Some(level),
        ..MatOpts::default()
    };
    w.matmul_opts(x, n, &mut y, &mut s, &opts).unwrap();
    y
}

fn random_weight(rng: &mut Rng, out: usize, inp: usize) -> PackedWeight {
    match rng.below(6) {
        0 => PackedWeight::from_f32(out, inp, &rng.vec(out * inp)).unwrap(),
        1 => {
            let v: Vec<f16> = rng.vec(out * inp).into_iter().map(f16::from_f32).collect();
            PackedWeight::from_f16(out, inp, &v).unwrap()
        }
        k => {
            let g = rand_group(rng, inp);
            PackedWeight::from_quant(rand_quant(rng, FORMATS[k - 2], out, inp, g).parts()).unwrap()
        }
    }
}

#[test]
fn scalar_matches_f64_reference() {
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let (out, inp) = (rng.pick(&WIDTHS), rng.pick(&WIDTHS));
        let w = random_weight(&mut rng, out, inp);
        let x = rng.vec(inp);
        let (yr, mag) = ref_matvec(&w, &x);
        let y = run(&w, &x, 1, Activations::F32, SimdLevel::Scalar);
        let yr32: Vec<f32> = yr.iter().map(|v| *v as f32).collect();
        let e = max_rel(&y, &yr32, &mag);
        assert!(
            e <= F_BOUND,
            "seed {seed} {} {out}x{inp}: {e}",
            w.format_name()
        );
    }
}

#[test]
fn simd_paths_match_scalar() {
    let levels = dispatch::supported();
    eprintln!("supported levels: {levels:?}");
    let mut worst = std::collections::BTreeMap::new();
    for seed in 0..400 {
        let mut rng = Rng::new(1000 + seed);
        let (out, inp) = (rng.pick(&WIDTHS), rng.pick(&WIDTHS));
        let n = rng.pick(&[1, 1, 2, 4, 5, 9]);
        let w = random_weight(&mut rng, out, inp);
        let x = rng.vec(n * inp);
        let mut mag = Vec::new();
        for t in 0..n {
            mag.extend(kernel_mag(&w, &x[t * inp..(t + 1) * inp]));
        }
        for act in [Activations::F32, Activations::Int8] {
            let base = run(&w, &x, n, act, SimdLevel::Scalar);
            for &l in &levels[1..] {
                let y = run(&w, &x, n, act, l);
                let e = max_rel(&y, &base, &mag);
                let bound = if act == Activations::Int8 && w.quant_format().is_some() {
                    Q8_BOUND
                } else {
                    F_BOUND
                };
                let k = format!("{} {:?} {}", w.format_name(), act, l.as_str());
                let m = worst.entry(k).or_insert(0f64);
                *m = m.max(e);
                assert!(
                    e <= bound,
                    "seed {seed} {} {act:?} {l:?} {out}x{inp} n={n}: {e}",
                    w.format_name()
                );
            }
        }
    }
    for (k, v) in worst {
        eprintln!("worst rel err vs scalar  {k:28} {v:.2e}");
    }
}

#[test]
fn matmul_equals_matvec_per_token() {
    for seed in 0..60 {
        let mut rng = Rng::new(5000 + seed);
        let (out, inp) = (rng.pick(&WIDTHS), rng.pick(&WIDTHS));
        let n = 1 + rng.below(9);
        let w = random_weight(&mut rng, out, inp);
        let x = rng.vec(n * inp);
        for act in [Activations::F32, Activations::Int8] {
            let y = run(&w, &x, n, act, dispatch::active());
            for t in 0..n {
                let yt = run(&w, &x[t * inp..(t + 1) * inp], 1, act, dispatch::active());
                let mag = kernel_mag(&w, &x[t * inp..(t + 1) * inp]);
                let e = max_rel(&y[t * out..(t + 1) * out], &yt, &mag);
                assert!(e <= F_BOUND, "seed {seed} t={t}: {e}");
            }
        }
    }
}

#[test]
fn threads_match_single() {
    for seed in 0..30 {
        let mut rng = Rng::new(7000 + seed);
        let (out, inp) = (rng.pick(&WIDTHS), rng.pick(&WIDTHS));
        let n = rng.pick(&[1, 1, 3, 8]);
        let w = random_weight(&mut rng, out, inp);
        let x = rng.vec(n * inp);
        for act in [Activations::F32, Activations::Int8] {
            let base = run(&w, &x, n, act, dispatch::active());
            for threads in [2, 3, 5] {
                let mut y = vec![0.0; n * out];
                let opts = MatOpts {
                    act,
                    threads,
                    ..MatOpts::default()
                };
                w.matmul_opts(&x, n, &mut y, &mut Scratch::new(), &opts)
                    .unwrap();
                assert!(
                    y == base,
                    "seed {seed} threads {threads} act {act:?} {out}x{inp} n={n} fmt {:?}",
                    w.quant_format()
                );
            }
        }
    }
}

#[test]
fn fused_norm_matches_separate() {
    let ops = Ops::default();
    for seed in 0..60 {
        let mut rng = Rng::new(9000 + seed);
        let (out, inp) = (rng.pick(&WIDTHS), rng.pick(&WIDTHS));
        let w = random_weight(&mut rng, out, inp);
        let (x, nw) = (rng.vec(inp), rng.vec(inp));
        let mut xn = vec![0.0; inp];
        ops.rmsnorm(&mut xn, &x, &nw, 1e-5).unwrap();
        let (_, mag) = ref_matvec(&w, &xn);
        for act in [Activations::F32, Activations::Int8] {
            let want = run(&w, &xn, 1, act, dispatch::active());
            let mut y = vec![0.0; out];
            let norm = Some(RmsNorm {
                weight: &nw,
                eps: 1e-5,
            });
            let opts = MatOpts {
                act,
                norm,
                ..MatOpts::default()
            };
            w.matmul_opts(&x, 1, &mut y, &mut Scratch::new(), &opts)
                .unwrap();
            // Int8: normalized values can round to a different code (≤ 1 step of one element).
            let bound = if act == Activations::F32 {
                F_BOUND
            } else {
                2e-2
            };
            let e = max_rel(&y, &want, &mag);
            assert!(e <= bound, "seed {seed} {} {act:?}: {e}", w.format_name());
        }
    }
}

#[test]
fn pack_round_trips() {
    for seed in 0..200 {
        let mut rng = Rng::new(11000 + seed);
        let (out, inp) = (rng.pick(&WIDTHS), rng.pick(&WIDTHS));
        let f = FORMATS[rng.below(4)];
        let g = rand_group(&mut rng, inp);
        let raw = rand_quant(&mut rng, f, out, inp, g);
        let w = PackedWeight::from_quant(raw.parts()).unwrap();
        for _ in 0..20 {
            let (r, c) = (rng.below(out), rng.below(inp));
            assert_eq!(
                w.get(r, c) as f64,
                raw.deq(r, c) as f32 as f64,
                "{f:?} g={g}"
            );
        }
        match w.to_raw() {
            RawWeight::Quant {
                format,
                group,
                qweight,
                scales,
                zeros,
            } => {
                assert_eq!((format, group), (f, g));
                assert_eq!(qweight, raw.qweight, "{f:?} {out}x{inp} g={g}");
                assert_eq!(scales, raw.scales);
                assert_eq!(zeros, raw.zeros);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let v: Vec<f32> = Rng::new(1).vec(17 * 3);
    assert_eq!(
        PackedWeight::from_f32(17, 3, &v).unwrap().to_raw(),
        RawWeight::F32(v.clone())
    );
    let h: Vec<f16> = v.iter().map(|x| f16::from_f32(*x)).collect();
    assert_eq!(
        PackedWeight::from_f16(3, 17, &h).unwrap().to_raw(),
        RawWeight::F16(h)
    );
}

#[test]
fn malformed_parts_are_errors() {
    let mut rng = Rng::new(3);
    let good = rand_quant(&mut rng, QuantFormat::Int4Asym, 5, 33, 16);
    assert!(PackedWeight::from_quant(good.parts()).is_ok());
    let mut p = good.parts();
    p.qweight = &good.qweight[1..];
    assert!(matches!(
        PackedWeight::from_quant(p),
        Err(KernelError::Length {
            what: "qweight",
            ..
        })
    ));
    let mut p = good.parts();
    p.scales = &good.scales[1..];
    assert!(matches!(
        PackedWeight::from_quant(p),
        Err(KernelError::Length { what: "scales", .. })
    ));
    let mut p = good.parts();
    p.zeros = None;
    assert!(PackedWeight::from_quant(p).is_err());
    let z = good.zeros.as_ref().unwrap();
    let mut p = good.parts();
    p.zeros = Some(&z[..z.len() - 1]);
    assert!(PackedWeight::from_quant(p).is_err());
    let mut bad_z = z.clone();
    bad_z[4] = 16;
    let mut p = good.parts();
    p.zeros = Some(&bad_z);
    assert!(matches!(
        PackedWeight::from_quant(p),
        Err(KernelError::Range { index: 4, .. })
    ));
    let mut p = good.parts();
    p.group = 0;
    assert!(matches!(
        PackedWeight::from_quant(p),
        Err(KernelError::Group(0))
    ));
    let mut p = good.parts();
    p.format = QuantFormat::Int4Sym;
    assert!(PackedWeight::from_quant(p).is_err(), "sym with zeros");
    let mut p = good.parts();
    p.out = 0;
    assert!(PackedWeight::from_quant(p).is_err());
    let mut nan = good.scales.clone();
    nan[2] = f16::NAN;
    let mut p = good.parts();
    p.scales = &nan;
    assert!(matches!(
        PackedWeight::from_quant(p),
        Err(KernelError::NonFiniteScale(2))
    ));
    let mut s8 = rand_quant(&mut rng, QuantFormat::Int8Sym, 2, 7, 32);
    s8.qweight[3] = 0x80;
    assert!(
        PackedWeight::from_quant(s8.parts()).is_err(),
        "int8 code -128"
    );
    assert!(PackedWeight::from_f32(2, 3, &[0.0; 5]).is_err());
    assert!(PackedWeight::from_f16(0, 3, &[]).is_err());
    // Kernel calls with wrong buffer sizes are errors too.
    let w = PackedWeight::from_quant(good.parts()).unwrap();
    let mut s = Scratch::new();
    assert!(w.matvec(&[0.0; 32], &mut [0.0; 5], &mut s).is_err());
    assert!(w.matvec(&[0.0; 33], &mut [0.0; 4], &mut s).is_err());
    assert!(w.matmul(&[0.0; 66], 3, &mut [0.0; 15], &mut s).is_err());
}

#[test]
fn level_parse_and_clamp() {
    // Parsing `SQUISH_SIMD` is squish-hwdiag's (tested there); here: the kernels' clamping.
    let best = dispatch::detect();
    assert_eq!(dispatch::clamp(SimdLevel::Scalar), SimdLevel::Scalar);
    assert_eq!(dispatch::clamp(best), best);
    assert!(dispatch::clamp(SimdLevel::Avx512Vnni).within(best));
    assert!(dispatch::active().within(best));
    assert_eq!(dispatch::supported().first(), Some(&SimdLevel::Scalar));
    assert_eq!(dispatch::supported().last(), Some(&best));
    if let squish_hwdiag::simd::EnvCap::Cap(cap) = squish_hwdiag::simd::simd_cap_from_env() {
        assert!(dispatch::active().within(cap));
    }
}

/// INT4 × int8 activations: the interleaved kernels (AVX2 `vpmaddubsw`, AVX-512 VNNI
/// `vpdpbusd` with 8-token tiles) compute exact integer sums, so every x86 path gives the same
/// bits for any token count (tile remainders included).
#[test]
fn int4_int8_paths_agree_bit_for_bit() {
    let levels: Vec<SimdLevel> = dispatch::supported()
        .into_iter()
        .filter(|l| *l != SimdLevel::Scalar && *l != SimdLevel::Neon)
        .collect();
    for seed in 0..80 {
        let mut rng = Rng::new(9000 + seed);
        let (out, inp) = (rng.pick(&WIDTHS), rng.pick(&WIDTHS));
        let fmt = rng.pick(&[QuantFormat::Int4Sym, QuantFormat::Int4Asym]);
        let g = rand_group(&mut rng, inp);
        let w = PackedWeight::from_quant(rand_quant(&mut rng, fmt, out, inp, g).parts()).unwrap();
        for n in [1, 3, 8, 12, 17] {
            let x = rng.vec(n * inp);
            let ys: Vec<Vec<f32>> = levels
                .iter()
                .map(|&l| run(&w, &x, n, Activations::Int8, l))
                .collect();
            for (l, y) in levels.iter().zip(&ys).skip(1) {
                assert!(
                    y == &ys[0],
                    "seed {seed} {fmt:?} {out}x{inp} n={n}: {l:?} vs {:?}",
                    levels[0]
                );
            }
        }
    }
}
