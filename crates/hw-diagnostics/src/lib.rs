//! # squish-hwdiag — the squish hardware check (plan step 1 / pipeline phase 7)
//!
//! Detects what the machine is (CPU, caches, RAM, OS, GPU presence, SIMD features, toolchain)
//! and **measures** what it can do (FP32/FP16/INT8 throughput, memory bandwidth, a tiny-LM
//! matvec, cross-thread sync cost). From the numbers it derives a rating per item, an overall
//! verdict, the kernel path and thread counts the squish runtime should use, and honest upgrade
//! advice.
//!
//! ```no_run
//! use squish_hwdiag::{probe_with, write_reports, ProbeOptions};
//! let report = probe_with(&ProbeOptions { quick: true, ..ProbeOptions::default() });
//! println!("{}", report.to_markdown());
//! write_reports(&report, std::path::Path::new("reports")).unwrap();
//! // Runtime dispatch (detection only, cheap):
//! let level = squish_hwdiag::best_simd_level();
//! # let _ = level;
//! ```
//!
//! ## Forcing a path: `SQUISH_SIMD`
//! `SQUISH_SIMD=scalar|avx2|avx512|avx512vnni|neon` caps the SIMD path (the squish kernels crate
//! honours the same variable). The effective path is the best *detected* level not above the
//! cap, so `avx512` on an AVX2-only CPU gives `avx2`, and `scalar` always works. Empty or `auto`
//! means no cap; unknown values are ignored (and reported as a warning). [`ProbeOptions::force`]
//! overrides the variable.
//!
//! ## What is measured (and how ops are counted)
//! | figure | kernel | counting |
//! |---|---|---|
//! | FP32 GFLOPS, 1 thread and all threads | independent FMA chains in registers (12 ymm / 16 zmm / 16 NEON q) | 1 FMA = 2 flops |
//! | FP16 GFLOPS | f16 weights x f32 activations dot, 4096 elements (L1), F16C/AVX-512 convert + FMA | 2 flops per element |
//! | INT8 GOPS | u8 x i8 dot into i32, 4096 bytes (L1): `vpdpbusd` (AVX-512 VNNI / AVX-VNNI), else `vpmaddubsw`+`vpmaddwd`, NEON `smull`+`sadalp` | 2 ops per byte pair; one `vpdpbusd` 32-bit lane = 4 multiply-adds = 8 ops |
//! | INT8 peak GOPS | register-resident u8 x i8 multiply-add into 12 i32 accumulators (no loads, like the FP32 peak): `vpdpbusd` zmm/ymm, else `vpmaddubsw`+`vpmaddwd`+`vpaddd`; portable i32 loop | 2 ops per byte pair |
//! | memory GB/s, 1 and all threads | read stream over max(256 MiB, 4 x LLC) (quick: 64 MiB), best of 5 (quick: 2) passes | bytes read |
//! | matvec 512x64 and 172x64 f32 | per kernel path up to the effective level | 2 x rows x cols flops per call; ns per call |
//! | sync round trip | two threads ping-ponging an atomic | ns, median of 64-round-trip batches |
//!
//! Each throughput figure is the best of several timed samples after calibration (the median is
//! reported too). The FP16 and INT8 dots load from L1 (load-bound); the INT8 *peak* is
//! register-resident like the FP32 peak, and the INT8/FP32 ratio compares those two peaks. "Scalar" kernels are portable Rust without intrinsics (the
//! compiler may still auto-vectorise them for the baseline target, e.g. SSE2) — i.e. what a
//! portable fallback achieves. A full probe takes about 2-3 s; `quick` about 0.5-1 s.
//!
//! ## Thresholds (named constants in [`assess`])
//! | item | poor | ok | good | counts for overall |
//! |---|---|---|---|---|
//! | best SIMD level | scalar | avx2, neon | avx512, avx512vnni | yes |
//! | FP32 GFLOPS per thread | < 5 | < 20 | >= 20 | yes |
//! | 512x64 matvec GFLOPS | < 2 | < 10 | >= 10 | yes |
//! | usable RAM GiB | < 2 | < 8 | >= 8 | yes |
//! | FP16 GFLOPS per thread | < 2 | < 10 | >= 10 | no |
//! | INT8 GOPS / FP32 GFLOPS | < 1.0 | < 1.8 | >= 1.8 | no |
//! | read bandwidth (all threads) GB/s | < 5 | < 20 | >= 20 | no |
//! | FP32 parallel efficiency | < 0.5 | < 0.8 | >= 0.8 | no |
//! | physical cores | < 2 | < 4 | >= 4 | no |
//!
//! Overall = the worst rating among the known "counts for overall" items.
//!
//! ## Recommendation rules
//! * **Decode threads** (cache-resident tiny model): with `n` usable threads, parallel efficiency
//!   `eff` (FP32 all-thread / (1-thread x n)), single-thread 512x64 matvec time `t1` and measured
//!   sync round trip `rt`, the predicted speed-up is `t1 / (t1/(n*eff) + rt)`; use `n` threads
//!   if it is >= [`assess::MIN_PARALLEL_SPEEDUP`] (1.3), else 1.
//! * **Batch threads**: 1 if the all-thread FP32 speed-up < 1.3; one per physical core if SMT is
//!   present and `eff` < 0.8; else all threads.
//! * **Kernel path**: the effective level, unless a lower level's measured 512x64 matvec is at
//!   least [`assess::MIN_KERNEL_ADVANTAGE`] (1.05x) faster (e.g. AVX-512 down-clocking).
//!
//! ## JSON schema (`schema_version` = [`SCHEMA_VERSION`])
//! The JSON is the serde form of [`HardwareReport`]; field docs are the schema. Top level:
//! `schema_version`, `crate_version`, `generated_unix_s`, `probe_ms`, `quick`, `cpu`
//! ([`CpuInfo`]), `memory` ([`MemoryInfo`]), `os` ([`OsInfo`]), `gpu` ([`GpuInfo`]),
//! `toolchain` ([`ToolchainInfo`]), `simd` ([`SimdInfo`]), `benchmarks` ([`BenchResults`] or
//! `null`), `assessment` ([`Assessment`]), `recommendations` ([`Recommendations`]), `warnings`.
//! Unknown values are `null`. Enums are lowercase strings (`"avx512vnni"`, `"good"`). The crate
//! README lists every field.

#![deny(missing_docs)]

pub mod assess;
pub mod bench;
pub mod cpu;
pub mod recommend;
pub mod report;
pub mod simd;
pub mod stage;
pub mod system;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use assess::{Assessment, AssessmentItem, Rating, Recommendations, Upgrade};
pub use bench::{BenchResult, BenchResults, MatvecResult};
pub use cpu::{CacheLevel, CpuInfo};
/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use report::{
    HardwareReport, REPORT_BASENAME, SCHEMA_VERSION, SimdInfo, write_reports, write_reports_named,
};
pub use simd::{SIMD_ENV_VAR, SimdFeatures, SimdLevel, best_simd_level, detect_features};
pub use system::{GpuDevice, GpuInfo, MemoryInfo, OsInfo, ToolchainInfo};

/// Errors from writing or parsing reports (probing itself never fails).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A 1-minute load average at or above this many runnable tasks per usable thread triggers the
/// "machine busy" warning.
pub const BUSY_LOAD_PER_THREAD: f64 = 0.75;

/// Options for [`probe_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOptions {
    /// Cap the SIMD path (overrides `SQUISH_SIMD`). `Some(SimdLevel::Scalar)` measures the
    /// portable kernels.
    pub force: Option<SimdLevel>,
    /// Whether to honour `SQUISH_SIMD` when `force` is `None` (default `true`).
    pub honour_env: bool,
    /// Shortened benchmark budgets (~0.5-1 s instead of ~2-3 s); for tests and CI.
    pub quick: bool,
    /// Skip all benchmarks (detection only; assessment items become `unknown`).
    pub skip_benchmarks: bool,
    /// Threads for the all-thread benchmarks (default: `available_parallelism`).
    pub threads: Option<usize>,
    /// Size of the model's weights in bytes, to tailor the memory advice (default: a reference
    /// tiny-model working set of 512x64 + 172x64 f32).
    pub model_bytes: Option<u64>,
    /// Extra squish feature names to record in `toolchain.squish_features` (e.g. the calling
    /// binary's cargo features).
    pub features: Vec<String>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            force: None,
            honour_env: true,
            quick: false,
            skip_benchmarks: false,
            threads: None,
            model_bytes: None,
            features: Vec::new(),
        }
    }
}

/// Full probe with default options (honours `SQUISH_SIMD`; ~2-3 s of benchmarks).
pub fn probe() -> HardwareReport {
    probe_with(&ProbeOptions::default())
}

/// Probes the machine with `opts`. Never panics on unreadable or odd system files: missing
/// facts are `None`/unknown and noted in `warnings`.
pub fn probe_with(opts: &ProbeOptions) -> HardwareReport {
    let start = Instant::now();
    let generated_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut warnings = Vec::new();

    let cpu = cpu::probe_cpu();
    let memory = system::probe_memory();
    let os = system::probe_os();
    let gpu = system::probe_gpu();
    let toolchain = system::toolchain(&opts.features);

    let features = simd::detect_features();
    let detected = simd::level_from_features(&features);
    let (forced, forced_by) = match (opts.force, opts.honour_env) {
        (Some(l), _) => (Some(l), Some("options".to_string())),
        (None, true) => match simd::simd_cap_from_env() {
            simd::EnvCap::Cap(l) => (Some(l), Some(format!("env:{SIMD_ENV_VAR}"))),
            simd::EnvCap::Invalid(v) => {
                warnings.push(format!(
                    "{SIMD_ENV_VAR}={v:?} is not a known level (scalar|avx2|avx512|avx512vnni|neon); ignored"
                ));
                (None, None)
            }
            simd::EnvCap::None => (None, None),
        },
        (None, false) => (None, None),
    };
    let effective = simd::apply_cap(detected, forced);
    if let Some(f) = forced.filter(|f| *f != effective) {
        warnings.push(format!(
            "forced level `{f}` is not available here; using `{effective}`"
        ));
    }

    if cpu.vendor.is_none() || cpu.model.is_none() {
        warnings.push("CPU vendor/model unknown (/proc/cpuinfo and CPUID gave nothing)".into());
    }
    if cpu.caches.is_empty() {
        warnings.push("cache sizes unknown (no sysfs cache info or CPUID leaf)".into());
    }
    if cpu.frequency_mhz.is_none() {
        warnings.push("CPU frequency not readable".into());
    }
    if memory.total_bytes.is_none() {
        warnings.push("/proc/meminfo unreadable: RAM unknown".into());
    }
    if let Some(load) = os.load_average_1m {
        let n = cpu.available_parallelism as f64;
        if !opts.skip_benchmarks && load >= BUSY_LOAD_PER_THREAD * n {
            warnings.push(format!(
                "machine busy: 1-minute load average {load:.1} on {n} usable threads; figures (especially all-thread scaling and sync round trip) are pessimistic"
            ));
        }
    }
    if toolchain.profile.as_deref() == Some("debug") {
        warnings.push("built without optimisations (debug profile): benchmark figures are far below what the release runtime achieves".into());
    }

    let benchmarks = (!opts.skip_benchmarks).then(|| {
        let threads = opts.threads.unwrap_or(cpu.available_parallelism).max(1);
        bench::run_all(
            effective,
            threads,
            cpu.llc_bytes(),
            memory.usable_bytes(),
            opts.quick,
        )
    });
    if let Some(b) = &benchmarks {
        if b.mem_read_1t.is_none() {
            warnings.push(format!(
                "memory bandwidth not measured: could not allocate {} bytes",
                b.mem_buffer_bytes
            ));
        }
        if b.fp32_all.threads > 1 && b.sync_round_trip_ns.is_none() {
            warnings.push("cross-thread round trip not measurable (partner thread starved)".into());
        }
    }

    let inputs = assess::Inputs {
        cpu: &cpu,
        memory: &memory,
        gpu: &gpu,
        detected,
        effective,
        forced: forced.is_some() && effective != detected,
        bench: benchmarks.as_ref(),
        model_bytes: opts.model_bytes,
    };
    let assessment = assess::assess(&inputs);
    let recommendations = recommend::recommend(&inputs);

    HardwareReport {
        schema_version: SCHEMA_VERSION,
        crate_version: env!("CARGO_PKG_VERSION").to_string(),
        generated_unix_s,
        probe_ms: 0.0,
        quick: opts.quick,
        simd: SimdInfo {
            features,
            detected,
            forced,
            forced_by,
            effective,
        },
        cpu,
        memory,
        os,
        gpu,
        toolchain,
        benchmarks,
        assessment,
        recommendations,
        warnings,
    }
    .with_probe_ms(start)
}

impl HardwareReport {
    fn with_probe_ms(mut self, start: Instant) -> Self {
        self.probe_ms = start.elapsed().as_secs_f64() * 1e3;
        self
    }
}
