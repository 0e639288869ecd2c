//! Assessment (ratings against named thresholds) and recommendations derived from the measured
//! numbers: thread count, kernel path, and what hardware would help.

use serde::{Deserialize, Serialize};

use crate::bench::{BenchResults, MATVEC_SHAPES};
use crate::cpu::CpuInfo;
use crate::simd::SimdLevel;
use crate::system::{GpuInfo, MemoryInfo};

/// FP32 GFLOPS per thread below this is rated poor.
pub const FP32_GFLOPS_PER_THREAD_POOR: f64 = 5.0;
/// FP32 GFLOPS per thread at or above this is rated good (between: ok).
pub const FP32_GFLOPS_PER_THREAD_GOOD: f64 = 20.0;
/// FP16-weight dot GFLOPS (one thread) below this is rated poor.
pub const FP16_GFLOPS_PER_THREAD_POOR: f64 = 2.0;
/// FP16-weight dot GFLOPS (one thread) at or above this is rated good.
pub const FP16_GFLOPS_PER_THREAD_GOOD: f64 = 10.0;
/// INT8 GOPS / FP32 GFLOPS (one thread) below this is rated poor (INT8 brings no speed).
pub const INT8_SPEEDUP_POOR: f64 = 1.0;
/// INT8 GOPS / FP32 GFLOPS at or above this is rated good.
pub const INT8_SPEEDUP_GOOD: f64 = 1.8;
/// All-thread read bandwidth (GB/s) below this is rated poor.
pub const MEM_BW_GBPS_POOR: f64 = 5.0;
/// All-thread read bandwidth (GB/s) at or above this is rated good.
pub const MEM_BW_GBPS_GOOD: f64 = 20.0;
/// FP32 all-thread parallel efficiency (total / (1-thread x threads)) below this is poor.
pub const SCALING_EFFICIENCY_POOR: f64 = 0.5;
/// Parallel efficiency at or above this is rated good.
pub const SCALING_EFFICIENCY_GOOD: f64 = 0.8;
/// 512x64 cache-resident matvec GFLOPS below this is rated poor.
pub const MATVEC_GFLOPS_POOR: f64 = 2.0;
/// 512x64 matvec GFLOPS at or above this is rated good.
pub const MATVEC_GFLOPS_GOOD: f64 = 10.0;
/// Usable RAM (GiB) below this is rated poor.
pub const RAM_AVAILABLE_GIB_POOR: f64 = 2.0;
/// Usable RAM (GiB) at or above this is rated good.
pub const RAM_AVAILABLE_GIB_GOOD: f64 = 8.0;
/// Physical cores below this are rated poor.
pub const PHYSICAL_CORES_POOR: f64 = 2.0;
/// Physical cores at or above this are rated good.
pub const PHYSICAL_CORES_GOOD: f64 = 4.0;
/// Minimum predicted speed-up for using more than one thread.
pub const MIN_PARALLEL_SPEEDUP: f64 = 1.3;
/// A lower SIMD level's matvec must beat the highest level's by this factor to be preferred.
pub const MIN_KERNEL_ADVANTAGE: f64 = 1.05;
/// Typical GPU kernel-launch latency, ns. An assumption (not measured here), used only to put
/// the measured CPU matvec time in context.
pub const GPU_LAUNCH_LATENCY_NS_ASSUMED: f64 = 5_000.0;

const GIB: f64 = (1u64 << 30) as f64;

/// A rating against the thresholds above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    /// Below the "poor" threshold.
    Poor,
    /// Between the thresholds.
    Ok,
    /// At or above the "good" threshold.
    Good,
    /// Not measured / not readable.
    Unknown,
}

impl Rating {
    /// Rates `value` where higher is better.
    pub fn higher_is_better(value: Option<f64>, poor: f64, good: f64) -> Rating {
        match value {
            Some(v) if v.is_finite() && v < poor => Rating::Poor,
            Some(v) if v.is_finite() && v < good => Rating::Ok,
            Some(v) if v.is_finite() => Rating::Good,
            _ => Rating::Unknown,
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Poor => "poor",
            Rating::Ok => "ok",
            Rating::Good => "good",
            Rating::Unknown => "unknown",
        }
    }
}

/// One assessed item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssessmentItem {
    /// Stable key (`fp32_gflops_per_thread`, ...).
    pub key: String,
    /// Human label.
    pub label: String,
    /// Measured/read value (`None` = unknown).
    pub value: Option<f64>,
    /// Unit of `value`.
    pub unit: String,
    /// The value as displayed (`"78.1 GFLOPS"`, `"avx2"`, `"unknown"`).
    pub display: String,
    /// Rating.
    pub rating: Rating,
    /// The thresholds applied, in words.
    pub rule: String,
    /// Whether this item counts towards the overall rating.
    pub core: bool,
}

/// Ratings plus the overall verdict (worst rating among the `core` items that are known).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Overall rating.
    pub overall: Rating,
    /// One-paragraph summary.
    pub summary: String,
    /// Per-item ratings.
    pub items: Vec<AssessmentItem>,
}

/// Hardware that would (or would not) help, and by how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgrade {
    /// Component (`simd`, `memory`, `cores`, `single_core`, `gpu`, `ram`).
    pub component: String,
    /// Advice, with the measured numbers it rests on.
    pub advice: String,
    /// Expected gain in words (`none`, `~2x INT8 (estimate)`, ...).
    pub expected_gain: String,
}

/// What the runtime should do on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendations {
    /// Threads for single-stream decode of a cache-resident tiny model.
    pub threads: usize,
    /// The rule and numbers behind `threads`.
    pub thread_rule: String,
    /// Threads for batched work (evaluation, training).
    pub threads_batch: usize,
    /// The rule and numbers behind `threads_batch`.
    pub threads_batch_rule: String,
    /// Kernel path the runtime should use.
    pub simd_level: SimdLevel,
    /// The rule and numbers behind `simd_level`.
    pub kernel_rule: String,
    /// Upgrade advice.
    pub upgrades: Vec<Upgrade>,
}

/// Everything the assessment looks at.
pub(crate) struct Inputs<'a> {
    pub cpu: &'a CpuInfo,
    pub memory: &'a MemoryInfo,
    pub gpu: &'a GpuInfo,
    pub detected: SimdLevel,
    pub effective: SimdLevel,
    pub forced: bool,
    pub bench: Option<&'a BenchResults>,
    pub model_bytes: Option<u64>,
}

fn item(
    key: &str,
    label: &str,
    value: Option<f64>,
    unit: &str,
    poor: f64,
    good: f64,
    core: bool,
) -> AssessmentItem {
    AssessmentItem {
        key: key.into(),
        label: label.into(),
        value,
        unit: unit.into(),
        display: value.map_or_else(|| "unknown".into(), |v| format!("{} {unit}", fmt_num(v))),
        rating: Rating::higher_is_better(value, poor, good),
        rule: format!("< {poor} poor, < {good} ok, >= {good} good"),
        core,
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn simd_rating(l: SimdLevel) -> Rating {
    match l {
        SimdLevel::Scalar => Rating::Poor,
        SimdLevel::Avx2 | SimdLevel::Neon => Rating::Ok,
        SimdLevel::Avx512 | SimdLevel::Avx512Vnni => Rating::Good,
    }
}

/// Rates each item.
pub(crate) fn assess(i: &Inputs) -> Assessment {
    let b = i.bench;
    let fp32_1 = b.map(|b| b.fp32_1t.best);
    let scaling = b.map(|b| b.fp32_all.best / (b.fp32_1t.best * b.fp32_all.threads as f64));
    // Register-resident peak vs register-resident peak (the load-bound L1 dot is not
    // comparable to the FP32 peak; older results without the peak fall back to it).
    let int8_ratio = b.map(|b| b.int8_peak_1t.as_ref().unwrap_or(&b.int8_1t).best / b.fp32_1t.best);
    let mem = b.and_then(|b| b.mem_read_all.as_ref()).map(|m| m.best);
    let matvec = b.and_then(|b| b.matvec_effective()).map(|m| m.gflops);
    let ram = i.memory.usable_bytes().map(|v| v as f64 / GIB);
    let items = vec![
        AssessmentItem {
            key: "simd_level".into(),
            label: "Best SIMD path (hardware)".into(),
            value: None,
            unit: "level".into(),
            display: i.detected.as_str().into(),
            rating: simd_rating(i.detected),
            rule: "scalar poor; avx2 / neon ok; avx512 / avx512vnni good".into(),
            core: true,
        },
        item(
            "fp32_gflops_per_thread",
            "FP32 FMA per thread",
            fp32_1,
            "GFLOPS",
            FP32_GFLOPS_PER_THREAD_POOR,
            FP32_GFLOPS_PER_THREAD_GOOD,
            true,
        ),
        item(
            "matvec_gflops",
            "512x64 f32 matvec (1 thread)",
            matvec,
            "GFLOPS",
            MATVEC_GFLOPS_POOR,
            MATVEC_GFLOPS_GOOD,
            true,
        ),
        item(
            "ram_usable_gib",
            "Usable RAM",
            ram,
            "GiB",
            RAM_AVAILABLE_GIB_POOR,
            RAM_AVAILABLE_GIB_GOOD,
            true,
        ),
        item(
            "fp16_gflops_per_thread",
            "FP16-weight dot per thread",
            b.map(|b| b.fp16_1t.best),
            "GFLOPS",
            FP16_GFLOPS_PER_THREAD_POOR,
            FP16_GFLOPS_PER_THREAD_GOOD,
            false,
        ),
        item(
            "int8_vs_fp32",
            "INT8 GOPS / FP32 GFLOPS peaks, register-resident (1 thread)",
            int8_ratio,
            "x",
            INT8_SPEEDUP_POOR,
            INT8_SPEEDUP_GOOD,
            false,
        ),
        item(
            "mem_bandwidth_gbps",
            "Read bandwidth (all threads)",
            mem,
            "GB/s",
            MEM_BW_GBPS_POOR,
            MEM_BW_GBPS_GOOD,
            false,
        ),
        item(
            "thread_scaling",
            "FP32 parallel efficiency",
            scaling,
            "fraction",
            SCALING_EFFICIENCY_POOR,
            SCALING_EFFICIENCY_GOOD,
            false,
        ),
        item(
            "physical_cores",
            "Physical cores",
            i.cpu.physical_cores.map(|c| c as f64),
            "cores",
            PHYSICAL_CORES_POOR,
            PHYSICAL_CORES_GOOD,
            false,
        ),
    ];
    let overall = items
        .iter()
        .filter(|x| x.core && x.rating != Rating::Unknown)
        .map(|x| x.rating)
        .min()
        .unwrap_or(Rating::Unknown);
    let weakest: Vec<&str> = items
        .iter()
        .filter(|x| x.core && x.rating == overall && overall != Rating::Good)
        .map(|x| x.label.as_str())
        .collect();
    let mut summary = format!(
        "Overall {}: {} {} ({} physical cores / {} threads usable), best SIMD path {}",
        overall.as_str(),
        i.cpu.vendor.as_deref().unwrap_or("unknown vendor"),
        i.cpu.model.as_deref().unwrap_or("unknown CPU"),
        opt(i.cpu.physical_cores),
        i.cpu.available_parallelism,
        i.detected
    );
    if let (Some(f), Some(m)) = (fp32_1, b.and_then(|b| b.matvec_effective())) {
        summary += &format!(
            "; {f:.1} FP32 GFLOPS/thread, 512x64 matvec {:.0} ns ({:.1} GFLOPS)",
            m.ns_per_call, m.gflops
        );
    } else {
        summary += "; benchmarks not run";
    }
    if !weakest.is_empty() {
        summary += &format!("; limited by: {}", weakest.join(", "));
    }
    if i.forced {
        summary += &format!(
            ". NOTE: benchmarks ran capped at `{}` (SQUISH_SIMD / force), so figures understate the hardware",
            i.effective
        );
    }
    summary.push('.');
    Assessment {
        overall,
        summary,
        items,
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "unknown".into(), |v| v.to_string())
}

/// Derives thread count, kernel path and upgrade advice from the measurements.
pub(crate) fn recommend(i: &Inputs) -> Recommendations {
    let n = i
        .bench
        .map_or(i.cpu.available_parallelism, |b| b.fp32_all.threads)
        .max(1);
    let (threads, thread_rule, threads_batch, threads_batch_rule) = threads(i, n);
    let (simd_level, kernel_rule) = kernel(i);
    Recommendations {
        threads,
        thread_rule,
        threads_batch,
        threads_batch_rule,
        simd_level,
        kernel_rule,
        upgrades: upgrades(i, threads),
    }
}

fn threads(i: &Inputs, n: usize) -> (usize, String, usize, String) {
    let Some(b) = i.bench else {
        return (
            1,
            "benchmarks not run: defaulting to 1 thread".into(),
            n,
            "benchmarks not run: using all available threads".into(),
        );
    };
    let speedup_all = b.fp32_all.best / b.fp32_1t.best;
    let eff = speedup_all / b.fp32_all.threads as f64;
    // Decode: split each matvec across n threads; one fork/join per matvec costs >= 1 round trip.
    let decode = match (b.matvec_effective(), b.sync_round_trip_ns) {
        (Some(m), Some(rt)) if n > 1 => {
            let t1 = m.ns_per_call;
            let tn = t1 / (n as f64 * eff.max(1e-3)) + rt;
            let s = t1 / tn;
            let t = if s >= MIN_PARALLEL_SPEEDUP { n } else { 1 };
            (
                t,
                format!(
                    "decode rule: use {n} threads only if predicted speed-up t1 / (t1/(n*eff) + sync) >= {MIN_PARALLEL_SPEEDUP}; \
                 t1 = {t1:.0} ns (512x64 matvec), eff = {eff:.2}, sync round trip = {rt:.0} ns -> predicted {s:.2}x -> {t} thread(s)"
                ),
            )
        }
        _ => (
            1,
            format!("decode rule: only {n} thread available (or sync not measurable) -> 1 thread"),
        ),
    };
    let smt = i.cpu.physical_cores.filter(|p| *p < n);
    let batch = if speedup_all < MIN_PARALLEL_SPEEDUP {
        (
            1,
            format!(
                "batch rule: all-thread FP32 speed-up {speedup_all:.2}x < {MIN_PARALLEL_SPEEDUP} -> 1 thread"
            ),
        )
    } else if let (Some(p), true) = (smt, eff < SCALING_EFFICIENCY_GOOD) {
        (
            p,
            format!(
                "batch rule: efficiency {eff:.2} < {SCALING_EFFICIENCY_GOOD} with SMT ({p} cores / {n} threads) -> one thread per physical core"
            ),
        )
    } else {
        (
            n,
            format!(
                "batch rule: all-thread FP32 speed-up {speedup_all:.2}x on {} threads (efficiency {eff:.2}) -> {n} threads",
                b.fp32_all.threads
            ),
        )
    };
    (decode.0, decode.1, batch.0, batch.1)
}

fn kernel(i: &Inputs) -> (SimdLevel, String) {
    let Some(b) = i.bench else {
        return (
            i.effective,
            format!("detection only: best available path {}", i.effective),
        );
    };
    let (rows, cols) = MATVEC_SHAPES[0];
    let ms: Vec<_> = b
        .matvec
        .iter()
        .filter(|m| m.rows == rows && m.cols == cols)
        .collect();
    let (Some(top), Some(fastest)) = (
        ms.iter().max_by_key(|m| m.level),
        ms.iter().max_by(|a, b| a.gflops.total_cmp(&b.gflops)),
    ) else {
        return (
            i.effective,
            format!("no matvec measured: best available path {}", i.effective),
        );
    };
    let list = ms
        .iter()
        .map(|m| format!("{} {:.1}", m.level, m.gflops))
        .collect::<Vec<_>>()
        .join(", ");
    if fastest.level != top.level && fastest.gflops >= top.gflops * MIN_KERNEL_ADVANTAGE {
        (
            fastest.level,
            format!(
                "measured 512x64 matvec GFLOPS per path ({list}): {} beats {} by >= {MIN_KERNEL_ADVANTAGE}x -> {}",
                fastest.level, top.level, fastest.level
            ),
        )
    } else {
        (
            i.effective,
            format!(
                "measured 512x64 matvec GFLOPS per path ({list}): highest path is not beaten by >= {MIN_KERNEL_ADVANTAGE}x -> {}",
                i.effective
            ),
        )
    }
}

fn kib(v: u64) -> String {
    format!("{} KiB", v / 1024)
}

fn upgrades(i: &Inputs, threads: usize) -> Vec<Upgrade> {
    let b = i.bench;
    let mut out = Vec::new();
    let up = |c: &str, a: String, g: &str| Upgrade {
        component: c.into(),
        advice: a,
        expected_gain: g.into(),
    };
    let int8 = b.map_or("not measured".into(), |b| match &b.int8_peak_1t {
        Some(p) => format!(
            "{:.0} GOPS peak, {:.0} GOPS load-bound from L1",
            p.best, b.int8_1t.best
        ),
        None => format!("{:.0} GOPS load-bound from L1", b.int8_1t.best),
    });
    out.push(match i.detected {
        SimdLevel::Scalar => up("simd", format!("No AVX2/FMA or NEON path: a CPU with AVX2+FMA (x86-64-v3) gives squish 8-lane FMA kernels (measured here, portable code: {}).", b.map_or("n/a".into(), |b| format!("{:.1} GFLOPS/thread", b.fp32_1t.best))), "~4-8x on matvec (vector width; estimate)"),
        SimdLevel::Avx2 => up("simd", format!("INT8 runs via vpmaddubsw+vpmaddwd ({int8}). A CPU with AVX-512 VNNI (Intel Ice Lake / Sapphire Rapids or later, AMD Zen 4 or later) does the same work with one vpdpbusd on twice the width."), "~1.5-3x INT8 per core (instruction count and width; estimate, not measured here); FP32 up to ~2x only on cores with two 512-bit FMA units"),
        SimdLevel::Avx512 => up("simd", format!("AVX-512 without VNNI: INT8 needs vpmaddubsw+vpmaddwd ({int8}); a VNNI-capable CPU fuses them into vpdpbusd."), "~1.5-2x INT8 (instruction count; estimate)"),
        SimdLevel::Avx512Vnni => up("simd", "Already on squish's best x86 path (AVX-512 VNNI). AMX tiles only pay off for batched matmuls (>= 16 rows), not batch-1 decode.".into(), "none for decode"),
        SimdLevel::Neon => up("simd", "NEON path. dotprod/i8mm cores would help INT8, but squish cannot use those intrinsics on stable Rust yet.".into(), "none today"),
    });
    let l2 = i.cpu.l2_bytes();
    let llc = i.cpu.llc_bytes();
    let ref_ws: u64 = MATVEC_SHAPES.iter().map(|(r, c)| (r * c * 4) as u64).sum();
    let (ws, what) = match i.model_bytes {
        Some(m) => (m, "model weights"),
        None => (
            ref_ws,
            "reference tiny-model working set (512x64 + 172x64 f32)",
        ),
    };
    let bw = b.and_then(|b| b.mem_read_all.as_ref()).map(|m| m.best);
    out.push(match (l2, llc) {
        (Some(l2), _) if ws <= l2 => up("memory", format!("The {what} ({}) fits in L2 ({} per core): weights stream from cache, so more DRAM bandwidth will not help decode.", kib(ws), kib(l2)), "none"),
        (_, Some(llc)) if ws <= llc => up("memory", format!("The {what} ({}) fits in the last-level cache ({}): more DRAM bandwidth will not help; a larger L2 might help modestly.", kib(ws), kib(llc)), "none from DRAM bandwidth"),
        (_, Some(_)) => up("memory", format!("The {what} ({}) exceeds the last-level cache: decode is bandwidth-bound, about {} tokens/s at the measured {} GB/s.", kib(ws), bw.map_or("?".into(), |bw| format!("{:.0}", bw * 1e9 / ws as f64)), bw.map_or("?".into(), |v| format!("{v:.1}"))), "proportional to memory bandwidth"),
        _ => up("memory", format!("Cache sizes unknown; the {what} is {}.", kib(ws)), "unknown"),
    });
    if let Some(b) = b {
        let n = b.fp32_all.threads;
        let s = b.fp32_all.best / b.fp32_1t.best;
        let decode = if threads > 1 {
            "decode already uses them"
        } else {
            "single-stream decode of a cache-resident tiny model stays on 1 thread (see thread rule)"
        };
        out.push(up("cores", format!("Measured FP32 scaling {s:.2}x on {n} threads; {decode}. More cores help batched evaluation/training."), "decode: none; batch: ~linear in physical cores"));
        if let Some(m) = b.matvec_effective() {
            out.push(up("single_core", format!("Decode latency is set by one core: 512x64 matvec takes {:.0} ns at {:.1} GFLOPS. Faster cores (clock x vector width) scale it directly.", m.ns_per_call, m.gflops), "~proportional to per-core FP32 throughput (+10% clock ~ +10% tokens/s)"));
            out.push(up("gpu", format!("{} The measured CPU matvec ({:.0} ns) is below a typical GPU kernel launch (~{:.0} ns, assumed, not measured), so a GPU would not speed up batch-1 decode of tiny models.",
                if i.gpu.present() { format!("GPU-like device(s) found ({}); squish does not use them.", i.gpu.found.len()) } else { "No GPU found.".to_string() },
                m.ns_per_call, GPU_LAUNCH_LATENCY_NS_ASSUMED), "none for tiny-model decode"));
        }
    }
    let ram = i.memory.usable_bytes().map(|v| v as f64 / GIB);
    out.push(match ram {
        Some(g) if g < RAM_AVAILABLE_GIB_POOR => up(
            "ram",
            format!("Only {g:.1} GiB usable: training/eval data may not fit; add RAM."),
            "avoids swapping",
        ),
        Some(g) => up(
            "ram",
            format!("{g:.1} GiB usable is ample for tiny models; more RAM will not help."),
            "none",
        ),
        None => up(
            "ram",
            "RAM size unknown (/proc/meminfo unreadable).".into(),
            "unknown",
        ),
    });
    out
}
