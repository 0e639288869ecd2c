//! Benches: matvec / matmul throughput per format × SIMD path × shape.
//!
//! A minimal criterion-like harness (`mini` below) replaces criterion: criterion's
//! dev-dependencies (regex with `std`, …) would change the feature set of crates
//! shared with burn once this crate depends on `squish-core`, forcing a burn rebuild.
//!
//! Throughput is reported in elements/s where one element = one FLOP
//! (2·out·in per matvec), so `Gelem/s` reads as GFLOP/s (GOP/s for int8 activations).
//! Run: `CARGO_TARGET_DIR=/work/target-kernels cargo bench -p squish-kernels --bench kernels`

use half::f16;
use mini::{BenchmarkId, Criterion, Throughput};
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
    // A 4-bit codebook with the same codes and scales: 16 non-uniform levels.
    let levels: Vec<f32> = (0..16).map(|k| ((k as f32 - 7.5) / 8.0).powi(3)).collect();
    let cb4 = PackedWeight::from_codebook(CodebookParts {
        bits: 4,
        out,
        inp,
        group: g,
        codes: &q4,
        scales: &scales,
        levels: &levels,
    })
    .unwrap();
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
        ("cb4-g32-f32act".into(), cb4.clone(), Activations::F32),
        ("cb4-g32-i8act".into(), cb4, Activations::Int8),
    ]
}

fn bench_matvec(c: &mut Criterion) {
    let levels = squish_kernels::dispatch::supported();
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
                grp.bench_function(BenchmarkId::new(&name, l.as_str()), |b| {
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
    let best = squish_kernels::dispatch::detect();
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
        .filter(|(n, ..)| n.starts_with("f32") || n.starts_with("int4") || n.starts_with("cb4"))
    {
        let mut s = Scratch::for_weight(w, n);
        let opts = MatOpts {
            act: *act,
            level: Some(best),
            ..MatOpts::default()
        };
        grp.bench_function(BenchmarkId::new(name, best.as_str()), |b| {
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
        .filter(|(n, ..)| n == "f32" || n == "int4-g32-i8act" || n == "cb4-g32-i8act")
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

fn main() {
    let mut c = Criterion;
    bench_matvec(&mut c);
    bench_matmul_threads(&mut c);
}

/// The subset of criterion's API used above: mean time over `sample_size`
/// samples after a warm-up, printed with the throughput.
mod mini {
    use std::time::{Duration, Instant};

    /// Work per iteration.
    pub enum Throughput {
        Elements(u64),
    }

    /// `function/parameter` label.
    pub struct BenchmarkId(String);
    impl BenchmarkId {
        pub fn new(f: impl std::fmt::Display, p: impl std::fmt::Display) -> Self {
            BenchmarkId(format!("{f}/{p}"))
        }
    }

    #[derive(Default)]
    pub struct Criterion;
    impl Criterion {
        pub fn benchmark_group(&mut self, name: String) -> Group {
            Group {
                name,
                measure: Duration::from_millis(700),
                warm: Duration::from_millis(200),
                samples: 10,
                elems: 1,
            }
        }
    }

    pub struct Group {
        name: String,
        measure: Duration,
        warm: Duration,
        samples: usize,
        elems: u64,
    }

    pub struct Bencher {
        iters: u64,
        elapsed: Duration,
    }
    impl Bencher {
        pub fn iter<R>(&mut self, mut f: impl FnMut() -> R) {
            let t = Instant::now();
            for _ in 0..self.iters {
                std::hint::black_box(f());
            }
            self.elapsed = t.elapsed();
        }
    }

    impl Group {
        pub fn measurement_time(&mut self, d: Duration) -> &mut Self {
            self.measure = d;
            self
        }
        pub fn warm_up_time(&mut self, d: Duration) -> &mut Self {
            self.warm = d;
            self
        }
        pub fn sample_size(&mut self, n: usize) -> &mut Self {
            self.samples = n;
            self
        }
        pub fn throughput(&mut self, t: Throughput) -> &mut Self {
            let Throughput::Elements(n) = t;
            self.elems = n;
            self
        }
        pub fn bench_function(&mut self, id: BenchmarkId, mut f: impl FnMut(&mut Bencher)) {
            // Warm up and calibrate the iterations per sample.
            let mut b = Bencher {
                iters: 1,
                elapsed: Duration::ZERO,
            };
            let start = Instant::now();
            while start.elapsed() < self.warm {
                f(&mut b);
                if b.elapsed < Duration::from_micros(100) {
                    b.iters *= 2;
                }
            }
            let per_iter = b.elapsed.as_secs_f64() / b.iters as f64;
            let per_sample = self.measure.as_secs_f64() / self.samples as f64;
            b.iters = ((per_sample / per_iter.max(1e-9)) as u64).max(1);
            let mut total = 0.0;
            for _ in 0..self.samples {
                f(&mut b);
                total += b.elapsed.as_secs_f64() / b.iters as f64;
            }
            let mean = total / self.samples as f64;
            println!(
                "{}/{:<28} {:>10.3} us  {:>8.2} Gelem/s",
                self.name,
                id.0,
                mean * 1e6,
                self.elems as f64 / mean / 1e9
            );
        }
        pub fn finish(&mut self) {}
    }
}
