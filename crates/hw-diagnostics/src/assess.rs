//! Assessment: ratings of the measured numbers against named thresholds ([`crate::recommend`]
//! turns the same numbers into advice).

use serde::{Deserialize, Serialize};

use crate::bench::BenchResults;
use crate::cpu::CpuInfo;
use crate::simd::SimdLevel;
use crate::system::{GpuInfo, MemoryInfo};

pub use crate::recommend::{Recommendations, Upgrade};

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

pub(crate) const GIB: f64 = (1u64 << 30) as f64;

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
