//! Criterion benches: matvec / matmul throughput per format × SIMD path × shape.
//!
//! Throughput is reported in elements/s where one element = one FLOP
//! (2·out·in per matvec), so `Gelem/s` reads as GFLOP/s (GOP/s for int8 activations).
//! Run: `CARGO_TARGET_DIR=/work/target-kernels cargo bench -p squish-kernels --bench kernels`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use squish_kernels::*;
use std::hint::black_box;
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn b(&mut self) -> u8 {
        self.f();
        (self.0 >> 24) as u8
    }
}

/// The formats benchmarked, each with the activation modes that apply.
fn weights(out: usize, inp: usize) -> Vec<(String, PackedWeight, Activations)> {
    let mut rng = Rng(0x1234_5678);
    let wf: Vec<f32> = (0..out * inp).map(|_| rng.f()).collect();
    let wh: Vec<f16> = wf.iter().map(|v| f16::from_f32(*v)).collect();
    let g = 32;
    let ng = inp.div_ceil(g);
    let scales: Vec<f16> = (0..out * ng).map(|_| f16::from_f32(0.01)).collect();
    let q8: Vec<u8> = (0..out * inp)
        .map(|_| (rng.b() % 255).wrapping_sub(127))
        .collect();
    let q4: Vec<u8> = (0..out * inp.div_ceil(2)).map(|_| rng.b()).collect();
    let mk = |format, qweight: &[u8]| {
        PackedWeight::from_quant(QuantParts {
            format,
            out,
            inp,
            group: g,
            qweight,
            scales: &scales,
            zeros: None,
        })
        .unwrap()
    };
    let i8w = mk(QuantFormat::Int8Sym, &q8);
    let i4w = mk(QuantFormat::Int4Sym, &q4);
    vec![
        (
            "f32".into(),
            PackedWeight::from_f32(out, inp, &wf).unwrap(),
            Activations::F32,
        ),
        (
            "f16".into(),
            PackedWeight::from_f16(out, inp, &wh).unwrap(),
            Activations::F32,
        ),
        ("int8-g32-f32act".into(), i8w.clone(), Activations::F32),
        ("int8-g32-i8act".into(), i8w, Activations::Int8),
        ("int4-g32-f32act".into(), i4w.clone(), Activations::F32),
        ("int4-g32-i8act".into(), i4w, Activations::Int8),
    ]
}

fn bench_matvec(c: &mut Criterion) {
    let levels = SimdLevel::supported();
    for &(out, inp) in &[(512usize, 64usize), (172, 64), (64, 172), (768, 256)] {
        let mut grp = c.benchmark_group(format!("matvec/{out}x{inp}"));
        grp.measurement_time(Duration::from_millis(700))
            .warm_up_time(Duration::from_millis(200))
            .sample_size(10)
            .throughput(Throughput::Elements(2 * (out * inp) as u64));
        let mut rng = Rng(99);
        let x: Vec<f32> = (0..inp).map(|_| rng.f()).collect();
        let mut y = vec![0f32; out];
        for (name, w, act) in weights(out, inp) {
            let mut s = Scratch::for_weight(&w, 1);
            for &l in &levels {
                let opts = MatOpts {
                    act,
                    level: Some(l),
                    ..MatOpts::default()
                };
                grp.bench_function(BenchmarkId::new(&name, l.name()), |b| {
                    b.iter(|| {
                        w.matmul_opts(black_box(&x), 1, &mut y, &mut s, &opts)
                            .unwrap()
                    })
                });
            }
        }
        grp.finish();
    }
}

fn bench_matmul_threads(c: &mut Criterion) {
    let (out, inp) = (768usize, 256usize);
    let best = SimdLevel::detect();
    let mut rng = Rng(7);
    let n = 16;
    let x: Vec<f32> = (0..n * inp).map(|_| rng.f()).collect();
    let mut grp = c.benchmark_group(format!("matmul{n}/{out}x{inp}"));
    grp.measurement_time(Duration::from_millis(700))
        .warm_up_time(Duration::from_millis(200))
        .sample_size(10)
        .throughput(Throughput::Elements(2 * (n * out * inp) as u64));
    let ws = weights(out, inp);
    let mut y = vec![0f32; n * out];
    for (name, w, act) in ws
        .iter()
        .filter(|(n, ..)| n.starts_with("f32") || n.starts_with("int4"))
    {
        let mut s = Scratch::for_weight(w, n);
        let opts = MatOpts {
            act: *act,
            level: Some(best),
            ..MatOpts::default()
        };
        grp.bench_function(BenchmarkId::new(name, best.name()), |b| {
            b.iter(|| {
                w.matmul_opts(black_box(&x), n, &mut y, &mut s, &opts)
                    .unwrap()
            })
        });
    }
    grp.finish();
    // Row-parallel matvec: 1 vs 2 threads.
    let mut grp = c.benchmark_group(format!("matvec-threads/{out}x{inp}"));
    grp.measurement_time(Duration::from_millis(700))
        .warm_up_time(Duration::from_millis(200))
        .sample_size(10)
        .throughput(Throughput::Elements(2 * (out * inp) as u64));
    let mut y = vec![0f32; out];
    for (name, w, act) in ws
        .iter()
        .filter(|(n, ..)| n == "f32" || n == "int4-g32-i8act")
    {
        let mut s = Scratch::for_weight(w, 1);
        for threads in [1, 2] {
            let opts = MatOpts {
                act: *act,
                level: Some(best),
                threads,
                ..MatOpts::default()
            };
            grp.bench_function(BenchmarkId::new(name, format!("{threads}thr")), |b| {
                b.iter(|| {
                    w.matmul_opts(black_box(&x[..inp]), 1, &mut y, &mut s, &opts)
                        .unwrap()
                })
            });
        }
    }
    grp.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench_matvec, bench_matmul_threads
}
criterion_main!(benches);
