//! Recommendations derived from the measured numbers: the thread counts, the kernel path, and
//! what hardware would help (each with the rule and numbers it rests on).

use serde::{Deserialize, Serialize};

use crate::assess::{
    GIB, GPU_LAUNCH_LATENCY_NS_ASSUMED, Inputs, MIN_KERNEL_ADVANTAGE, MIN_PARALLEL_SPEEDUP,
    RAM_AVAILABLE_GIB_POOR, SCALING_EFFICIENCY_GOOD,
};
use crate::bench::MATVEC_SHAPES;
use crate::simd::SimdLevel;

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
