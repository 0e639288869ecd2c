//! Micro-benchmarks. Every figure in the report comes from here and is measured, not looked up.
//!
//! Op-count conventions: one fused multiply-add = 2 flops (FP32/FP16); one u8xi8 multiply
//! accumulated into i32 = 2 ops (so one `vpdpbusd` 32-bit lane = 4 multiply-adds = 8 ops);
//! bandwidth counts bytes read; matvec counts `2 * rows * cols` flops per call.

#[cfg(target_arch = "aarch64")]
mod arm;
pub(crate) mod dispatch;
pub mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::SimdLevel;
use crate::simd::supported_levels;
use dispatch::Kernel;

/// Matrix shapes (rows x cols) of the cache-resident matvec benchmark, modelled on a tiny LM's
/// output projection (512x64) and FFN projection (172x64).
pub const MATVEC_SHAPES: [(usize, usize); 2] = [(512, 64), (172, 64)];

/// Elements in the L1-resident FP16 and INT8 dot-product buffers.
pub const DOT_LEN: usize = 4096;

/// One throughput measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Best (highest) rate over all samples: the headline figure.
    pub best: f64,
    /// Median rate over all samples.
    pub median: f64,
    /// Unit of `best`/`median` (`GFLOPS`, `GOPS`, `GB/s`).
    pub unit: String,
    /// SIMD level of the kernel that ran.
    pub level: SimdLevel,
    /// Kernel / instruction sequence that ran.
    pub kernel: String,
    /// Threads that ran it concurrently.
    pub threads: usize,
    /// Timed samples taken (after calibration/warm-up).
    pub samples: u32,
    /// Wall time spent in this benchmark, ms (including calibration).
    pub wall_ms: f64,
}

/// Cache-resident matvec timing for one shape and one kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatvecResult {
    /// Rows of the weight matrix.
    pub rows: usize,
    /// Columns of the weight matrix (= input length).
    pub cols: usize,
    /// SIMD level of the kernel.
    pub level: SimdLevel,
    /// Kernel name.
    pub kernel: String,
    /// Best time per call, ns.
    pub ns_per_call: f64,
    /// `2 * rows * cols / ns_per_call`.
    pub gflops: f64,
    /// Timed samples.
    pub samples: u32,
}

/// All benchmark results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResults {
    /// Whether the shortened (`quick`) budgets were used.
    pub quick: bool,
    /// SIMD level cap the benchmarks ran under (the effective level).
    pub level: SimdLevel,
    /// FP32 FMA peak, one thread (GFLOPS).
    pub fp32_1t: BenchResult,
    /// FP32 FMA peak, all available threads (GFLOPS, total).
    pub fp32_all: BenchResult,
    /// f16 weights x f32 activations dot product over an L1-resident buffer, one thread (GFLOPS).
    pub fp16_1t: BenchResult,
    /// u8 x i8 dot product over an L1-resident buffer, one thread (GOPS): **load-bound** (two
    /// operands streamed per instruction), not comparable to `fp32_1t`.
    pub int8_1t: BenchResult,
    /// Register-resident u8 x i8 multiply-add peak, one thread (GOPS, 2 ops per byte pair): the
    /// INT8 counterpart of `fp32_1t` (same kind of loop: independent accumulators, no loads).
    /// `None` in results written before it existed.
    #[serde(default)]
    pub int8_peak_1t: Option<BenchResult>,
    /// Read bandwidth over `mem_buffer_bytes`, one thread (GB/s). `None` if the buffer could
    /// not be allocated.
    pub mem_read_1t: Option<BenchResult>,
    /// Read bandwidth, all available threads (GB/s).
    pub mem_read_all: Option<BenchResult>,
    /// Size of the bandwidth buffer (>= 4x the last-level cache).
    pub mem_buffer_bytes: u64,
    /// Matvec per shape and per supported kernel (up to the effective level).
    pub matvec: Vec<MatvecResult>,
    /// Median cross-thread round trip (store -> other thread sees it -> replies), ns. This is
    /// the floor on the cost of one fork/join per operation. `None` with a single thread.
    pub sync_round_trip_ns: Option<f64>,
    /// Total wall time of all benchmarks, ms.
    pub total_ms: f64,
}

impl BenchResults {
    /// Fastest matvec result at the effective level for the largest shape.
    pub fn matvec_effective(&self) -> Option<&MatvecResult> {
        let (rows, cols) = MATVEC_SHAPES[0];
        self.matvec
            .iter()
            .filter(|m| m.rows == rows && m.cols == cols)
            .max_by_key(|m| m.level)
    }
}

/// Time budgets for one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub compute: Duration,
    pub matvec: Duration,
    pub sync: Duration,
    pub mem_passes: u32,
    pub mem_min_bytes: u64,
}

impl Budget {
    pub fn new(quick: bool) -> Budget {
        if quick {
            Budget {
                compute: Duration::from_millis(50),
                matvec: Duration::from_millis(15),
                sync: Duration::from_millis(15),
                mem_passes: 2,
                mem_min_bytes: 64 << 20,
            }
        } else {
            Budget {
                compute: Duration::from_millis(300),
                matvec: Duration::from_millis(80),
                sync: Duration::from_millis(60),
                mem_passes: 5,
                mem_min_bytes: 256 << 20,
            }
        }
    }
}

struct Rates {
    best: f64,
    median: f64,
    samples: u32,
    wall_ms: f64,
}

/// Repetitions of `run` that take about `target` (doubling from 1 until a run takes >= a
/// quarter of the target, then scaling). The doubling runs double as warm-up.
fn calibrate(target: Duration, mut run: impl FnMut(u64)) -> u64 {
    let target = target.as_secs_f64();
    let mut reps = 1u64;
    loop {
        let t = Instant::now();
        run(reps);
        let dt = t.elapsed().as_secs_f64();
        if dt >= target / 4.0 || reps >= 1 << 40 {
            let scale = if dt > 0.0 { target / dt } else { 2.0 };
            return ((reps as f64 * scale) as u64).max(1);
        }
        reps *= 2;
    }
}

/// Takes samples of `run(reps)` (which returns the ops it performed) until `budget` has passed
/// since `start` (3..=50 samples).
fn sample(budget: Duration, start: Instant, reps: u64, mut run: impl FnMut(u64) -> f64) -> Rates {
    let mut rates = Vec::new();
    while rates.len() < 3 || (start.elapsed() < budget && rates.len() < 50) {
        let t = Instant::now();
        let ops = run(reps);
        let dt = t.elapsed().as_secs_f64().max(1e-9);
        rates.push(ops / dt);
    }
    summarize(rates, start)
}

/// Calibrates so one sample takes ~budget/6, then samples until the budget is spent.
fn measure(budget: Duration, mut run: impl FnMut(u64) -> f64) -> Rates {
    let start = Instant::now();
    let reps = calibrate(budget / 6, |r| {
        black_box(run(r));
    });
    sample(budget, start, reps, run)
}

fn summarize(mut rates: Vec<f64>, start: Instant) -> Rates {
    rates.sort_by(f64::total_cmp);
    let best = rates.last().copied().unwrap_or(0.0);
    Rates {
        best,
        median: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
        samples: rates.len() as u32,
        wall_ms: start.elapsed().as_secs_f64() * 1e3,
    }
}

fn result(r: Rates, scale: f64, unit: &str, k: &Kernel, threads: usize) -> BenchResult {
    BenchResult {
        best: r.best * scale,
        median: r.median * scale,
        unit: unit.to_string(),
        level: k.level,
        kernel: k.name().to_string(),
        threads,
        samples: r.samples,
        wall_ms: r.wall_ms,
    }
}

/// Runs `f(reps)` on `threads` threads started together; returns the summed ops.
fn parallel(threads: usize, reps: u64, f: impl Fn(u64) -> f64 + Sync) -> f64 {
    if threads <= 1 {
        return f(reps);
    }
    let barrier = Barrier::new(threads);
    thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    f(reps)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}

/// FP32 FMA peak on `threads` threads (GFLOPS).
pub(crate) fn bench_fp32(level: SimdLevel, threads: usize, budget: Duration) -> BenchResult {
    let k = Kernel::fp32(level);
    let per_rep = k.fp32_flops_per_rep() as f64;
    let (a, b) = (black_box(0.999_999_f32), black_box(1e-6_f32));
    // Calibrate on one thread (no spawn cost in the calibration), then time all threads.
    let start = Instant::now();
    let reps = calibrate(budget / 6, |reps| {
        black_box(k.run_fp32(reps, a, b));
    });
    let r = sample(budget, start, reps, |reps| {
        parallel(threads, reps, |reps| {
            black_box(k.run_fp32(reps, a, b));
            reps as f64 * per_rep
        })
    });
    result(r, 1e-9, "GFLOPS", &k, threads)
}

/// FP16-weight dot product over L1-resident data, one thread (GFLOPS).
pub(crate) fn bench_fp16(level: SimdLevel, budget: Duration) -> BenchResult {
    let k = Kernel::fp16(level);
    let w: Vec<u16> = (0..DOT_LEN)
        .map(|i| portable::f32_to_f16_approx(((i % 29) as f32 - 14.0) * 0.03125))
        .collect();
    let x: Vec<f32> = (0..DOT_LEN)
        .map(|i| ((i % 13) as f32 - 6.0) * 0.1)
        .collect();
    let r = measure(budget, |reps| {
        for _ in 0..reps {
            black_box(k.run_fp16(black_box(&w), black_box(&x)));
        }
        reps as f64 * 2.0 * DOT_LEN as f64
    });
    result(r, 1e-9, "GFLOPS", &k, 1)
}

/// Register-resident INT8 multiply-add peak, one thread (GOPS).
pub(crate) fn bench_int8_peak(level: SimdLevel, budget: Duration) -> BenchResult {
    let k = Kernel::int8(level);
    let per_rep = k.int8_peak_ops_per_rep() as f64;
    let (a, b) = (black_box(3u8), black_box(5i8));
    let r = measure(budget, |reps| {
        black_box(k.run_int8_peak(reps, a, b));
        reps as f64 * per_rep
    });
    result(r, 1e-9, "GOPS", &k, 1)
}

/// u8 x i8 dot product over L1-resident data, one thread (GOPS).
pub(crate) fn bench_int8(level: SimdLevel, budget: Duration) -> BenchResult {
    let k = Kernel::int8(level);
    let a: Vec<u8> = (0..DOT_LEN).map(|i| ((i * 37 + 3) % 128) as u8).collect();
    let w: Vec<i8> = (0..DOT_LEN)
        .map(|i| ((i * 53 + 7) % 256) as u8 as i8)
        .collect();
    let r = measure(budget, |reps| {
        for _ in 0..reps {
            black_box(k.run_int8(black_box(&a), black_box(&w)));
        }
        reps as f64 * 2.0 * DOT_LEN as f64
    });
    result(r, 1e-9, "GOPS", &k, 1)
}

/// Read bandwidth over a buffer of at least `min_bytes` and 4x `llc`, best of `passes`.
/// Returns (1-thread, all-thread, buffer bytes); `None`s if the allocation fails.
pub(crate) fn bench_memory(
    threads: usize,
    llc: Option<u64>,
    budget: &Budget,
    usable_mem: Option<u64>,
) -> (Option<BenchResult>, Option<BenchResult>, u64) {
    let want = budget.mem_min_bytes.max(llc.unwrap_or(0).saturating_mul(4));
    let mut bytes = want.min(2 << 30);
    if let Some(u) = usable_mem {
        bytes = bytes.min(u / 4);
    }
    let n = (bytes / 8) as usize;
    let mut buf: Vec<u64> = Vec::new();
    if n == 0 || buf.try_reserve_exact(n).is_err() {
        return (None, None, bytes);
    }
    // Non-zero pattern so every page is really backed (a zero-filled allocation could map the
    // shared zero page and read from cache).
    buf.extend((0..n as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let k = Kernel::fp32(SimdLevel::Scalar);
    let run = |t: usize| {
        let start = Instant::now();
        let chunk = n.div_ceil(t);
        let mut rates = Vec::new();
        for _ in 0..budget.mem_passes.max(1) {
            let t0 = Instant::now();
            if t <= 1 {
                black_box(portable::sum_u64(black_box(&buf)));
            } else {
                let barrier = Barrier::new(t);
                thread::scope(|s| {
                    for part in buf.chunks(chunk) {
                        let barrier = &barrier;
                        s.spawn(move || {
                            barrier.wait();
                            black_box(portable::sum_u64(black_box(part)))
                        });
                    }
                });
            }
            rates.push(n as f64 * 8.0 / t0.elapsed().as_secs_f64().max(1e-9));
        }
        let mut r = result(summarize(rates, start), 1e-9, "GB/s", &k, t);
        r.kernel = "portable u64 read stream (compiler-vectorised)".to_string();
        r
    };
    let one = run(1);
    let all = run(threads.max(1));
    (Some(one), Some(all), n as u64 * 8)
}

/// Cache-resident matvec for every shape in [`MATVEC_SHAPES`] and every kernel up to `level`.
pub(crate) fn bench_matvec(level: SimdLevel, budget: Duration) -> Vec<MatvecResult> {
    let mut kernels: Vec<Kernel> = supported_levels(level)
        .into_iter()
        .map(Kernel::matvec)
        .collect();
    kernels.dedup_by_key(|k| k.name());
    let mut out = Vec::new();
    for (rows, cols) in MATVEC_SHAPES {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.01)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| ((i % 11) as f32 - 5.0) * 0.1).collect();
        let mut y = vec![0.0f32; rows];
        for k in &kernels {
            let flops = 2.0 * (rows * cols) as f64;
            let r = measure(budget, |reps| {
                for _ in 0..reps {
                    k.run_matvec(black_box(&w), black_box(&x), black_box(&mut y), rows, cols);
                }
                reps as f64 * flops
            });
            out.push(MatvecResult {
                rows,
                cols,
                level: k.level,
                kernel: k.name().to_string(),
                ns_per_call: flops / r.best * 1e9,
                gflops: r.best * 1e-9,
                samples: r.samples,
            });
        }
    }
    out
}

/// Median ping-pong round trip between two threads, ns (`None` if < 2 threads or the partner
/// never answered within the budget).
pub(crate) fn bench_sync(threads: usize, budget: Duration) -> Option<f64> {
    if threads < 2 {
        return None;
    }
    let flag = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let wait_for = |v: u64, deadline: Instant| -> bool {
        let mut spins = 0u32;
        while flag.load(Ordering::Acquire) != v {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            spins += 1;
            if spins.is_multiple_of(1024) {
                if Instant::now() > deadline {
                    return false;
                }
                thread::yield_now();
            }
            std::hint::spin_loop();
        }
        true
    };
    let hard = Instant::now() + budget * 4;
    let mut batch_ns = Vec::new();
    thread::scope(|s| {
        s.spawn(|| {
            let mut expect = 1u64;
            while wait_for(expect, hard) {
                flag.store(expect + 1, Ordering::Release);
                expect += 2;
            }
        });
        let start = Instant::now();
        let mut next = 1u64;
        'outer: while start.elapsed() < budget {
            let t = Instant::now();
            for _ in 0..64 {
                flag.store(next, Ordering::Release);
                if !wait_for(next + 1, hard) {
                    break 'outer;
                }
                next += 2;
            }
            batch_ns.push(t.elapsed().as_secs_f64() * 1e9 / 64.0);
        }
        stop.store(true, Ordering::Relaxed);
    });
    batch_ns.sort_by(f64::total_cmp);
    batch_ns.get(batch_ns.len() / 2).copied()
}

/// Runs every benchmark under SIMD cap `level` on up to `threads` threads.
pub(crate) fn run_all(
    level: SimdLevel,
    threads: usize,
    llc: Option<u64>,
    usable_mem: Option<u64>,
    quick: bool,
) -> BenchResults {
    let start = Instant::now();
    let b = Budget::new(quick);
    let threads = threads.max(1);
    let fp32_1t = bench_fp32(level, 1, b.compute);
    let fp32_all = bench_fp32(level, threads, b.compute);
    let fp16_1t = bench_fp16(level, b.compute);
    let int8_1t = bench_int8(level, b.compute);
    let int8_peak_1t = Some(bench_int8_peak(level, b.compute));
    let matvec = bench_matvec(level, b.matvec);
    let sync_round_trip_ns = bench_sync(threads, b.sync);
    let (mem_read_1t, mem_read_all, mem_buffer_bytes) = bench_memory(threads, llc, &b, usable_mem);
    BenchResults {
        quick,
        level,
        fp32_1t,
        fp32_all,
        fp16_1t,
        int8_1t,
        int8_peak_1t,
        mem_read_1t,
        mem_read_all,
        mem_buffer_bytes,
        matvec,
        sync_round_trip_ns,
        total_ms: start.elapsed().as_secs_f64() * 1e3,
    }
}
