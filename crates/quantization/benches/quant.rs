//! Quantize throughput (RTN, MSE, GPTQ on a 768×256 matrix) and pack/unpack speed.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use squish_core::data::Rng;
use squish_quant::{
    GptqConfig, Method, MseConfig, QuantFormat, QuantSpec, TensorStats, quantize_tensor,
};

const ROWS: usize = 768;
const COLS: usize = 256;

fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

fn bench(c: &mut Criterion) {
    let w = matrix(ROWS, COLS, 1); // [rows, cols]
    let x = matrix(1024, COLS, 2); // [n, cols]
    let stats = TensorStats::from_inputs(&x, COLS);
    let fmt = QuantFormat::new(4, Some(32), false).unwrap();
    let mut g = c.benchmark_group("quantize_768x256_int4_g32");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    for (name, method) in [
        ("rtn", Method::Rtn),
        ("mse", Method::Mse(MseConfig::default())),
        ("gptq", Method::Gptq(GptqConfig::default())),
    ] {
        let spec = QuantSpec {
            format: fmt,
            method,
        };
        g.bench_function(name, |b| {
            b.iter(|| quantize_tensor(black_box(&w), ROWS, COLS, &spec, Some(&stats)).unwrap())
        });
    }
    g.finish();
    let spec = QuantSpec {
        format: fmt,
        method: Method::Rtn,
    };
    let q = quantize_tensor(&w, ROWS, COLS, &spec, None).unwrap();
    let levels: Vec<i32> = (0..ROWS)
        .flat_map(|r| (0..COLS).map(move |c| (r, c)))
        .map(|(r, c)| q.level(r, c))
        .collect();
    let mut g = c.benchmark_group("pack_unpack_768x256_int4_g32");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    g.bench_function("pack", |b| {
        b.iter(|| {
            squish_core::quant::QTensor::from_levels(
                q.bits,
                ROWS,
                COLS,
                32,
                black_box(&levels),
                q.scales.clone(),
                None,
            )
            .unwrap()
        })
    });
    g.bench_function("unpack", |b| b.iter(|| black_box(&q).dequantize()));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
