//! Criterion benchmarks of the detection path and a quick probe.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    c.bench_function("best_simd_level", |b| {
        b.iter(|| black_box(squish_hwdiag::best_simd_level()))
    });
    c.bench_function("detect_features", |b| {
        b.iter(|| black_box(squish_hwdiag::detect_features()))
    });
    let mut g = c.benchmark_group("probe");
    g.sample_size(10);
    g.bench_function("probe_skip_benchmarks", |b| {
        b.iter(|| {
            black_box(squish_hwdiag::probe_with(&squish_hwdiag::ProbeOptions {
                skip_benchmarks: true,
                ..Default::default()
            }))
        })
    });
    g.finish();
}

criterion_group!(hwdiag, benches);
criterion_main!(hwdiag);
