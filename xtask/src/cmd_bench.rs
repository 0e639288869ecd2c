//! `cargo xtask bench`: speed of the native runtime on a checkpoint — prefill and
//! decode throughput, end-to-end latency, peak RSS, kernel path and tensor formats.
//! Also home of [`Engine`], the `--engine native|burn` choice of `eval`/`generate`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use squish_core::checkpoint;
use squish_core::quant::QBits;
use squish_kernels::runtime::{PAR_MIN_MACS, Runtime, RuntimeOptions, rtn_quantize};
use squish_kernels::{Activations, dispatch};

/// Inference engine of `eval` / `generate`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// squish-kernels' native runtime (KV cache / recurrent state, fused SIMD kernels).
    #[default]
    Native,
    /// The burn reference models.
    Burn,
}

/// Arguments of `bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Checkpoint (.safetensors); any family, any mix of tensor formats.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Worker threads (matmuls below the runtime's PAR_MIN_MACS stay on one thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Prompt tokens run as one prefill.
    #[arg(long, default_value_t = 128)]
    pub prefill: usize,
    /// Tokens decoded one by one after the prefill.
    #[arg(long, default_value_t = 128)]
    pub decode: usize,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 21)]
    pub reps: usize,
    /// Activation precision for quantized weights: f32 or int8.
    #[arg(long, default_value = "f32")]
    pub act: String,
    /// Re-quantize every matmul weight with round-to-nearest before running
    /// (`int4` / `int8`, symmetric, g = 32): an INT4 benchmark without a quantized
    /// checkpoint on disk. Off by default.
    #[arg(long)]
    pub rtn: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Median of `v` (non-empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident set size in kB (`VmHWM` of /proc/self/status), if available.
pub fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Nanoseconds of CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`, exact
/// to the nanosecond, unlike the tick-granular `/proc/thread-self/schedstat`).
#[cfg(target_os = "linux")]
fn cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout); the libc
    // function only writes it.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn cpu_ns() -> Option<u64> {
    None
}

/// Index of the largest logit (greedy token).
pub fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0 as u32
}

/// Entry point of `bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let mut ckpt = checkpoint::load(&a.checkpoint)
        .with_context(|| format!("loading {}", a.checkpoint.display()))?;
    if let Some(r) = &a.rtn {
        let bits = match r.as_str() {
            "int4" => QBits::Int4,
            "int8" => QBits::Int8,
            other => bail!("--rtn {other}: expected int4 or int8"),
        };
        ckpt.weights = rtn_quantize(&ckpt.weights, bits, 32)?;
    }
    let act = match a.act.as_str() {
        "f32" => Activations::F32,
        "int8" => Activations::Int8,
        other => bail!("--act {other}: expected f32 or int8"),
    };
    let opts = RuntimeOptions {
        threads: a.threads,
        act,
        max_batch: a.prefill.max(1),
        ..RuntimeOptions::default()
    };
    let t0 = Instant::now();
    let mut rt = Runtime::load_with(&ckpt, opts)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let vocab = rt.vocab_size() as u32;
    let total = a.prefill + a.decode;
    if a.prefill == 0 || total > rt.max_positions() {
        bail!(
            "prefill {} + decode {} must be in 1..={} positions",
            a.prefill,
            a.decode,
            rt.max_positions()
        );
    }
    // Deterministic prompt: BOS (1) then pseudo-random ids.
    let prompt: Vec<u32> = (0..a.prefill)
        .map(|i| {
            if i == 0 {
                1 % vocab
            } else {
                ((i as u64 * 7919 + 13) % vocab as u64) as u32
            }
        })
        .collect();
    let reps = a.reps.max(1);
    let (mut pre, mut dec, mut e2e) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pre_cpu, mut dec_cpu) = (Vec::new(), Vec::new());
    for rep in 0..reps + 2 {
        rt.reset();
        let (t, c0) = (Instant::now(), cpu_ns());
        let mut next = argmax(rt.prefill(&prompt)?);
        let (tp, c1) = (t.elapsed().as_secs_f64(), cpu_ns());
        let t = Instant::now();
        for _ in 0..a.decode {
            next = argmax(rt.step(next)?);
        }
        let (td, c2) = (t.elapsed().as_secs_f64(), cpu_ns());
        if rep >= 2 {
            // The first two runs warm caches and branch predictors.
            pre.push(tp);
            dec.push(td);
            e2e.push(tp + td);
            if let (Some(c0), Some(c1), Some(c2)) = (c0, c1, c2) {
                pre_cpu.push((c1 - c0) as f64 * 1e-9);
                dec_cpu.push((c2 - c1) as f64 * 1e-9);
            }
        }
    }
    let (pre, dec, e2e) = (median(pre), median(dec), median(e2e));
    // On-CPU time of this thread: excludes time the OS gave the core to other processes.
    let cpu = (pre_cpu.len() == reps).then(|| (median(pre_cpu), median(dec_cpu)));
    let prefill_cpu_tps = cpu.map(|c| a.prefill as f64 / c.0);
    let decode_cpu_tps = cpu.map(|c| {
        if a.decode > 0 {
            a.decode as f64 / c.1
        } else {
            0.0
        }
    });
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string));
    let prefill_tps = a.prefill as f64 / pre;
    let decode_tps = if a.decode > 0 {
        a.decode as f64 / dec
    } else {
        0.0
    };
    let rss = peak_rss_kb();
    let simd = rt.level().as_str();
    let detected = dispatch::detect().as_str();
    let forced = std::env::var("SQUISH_SIMD").ok();
    let threads_note = format!(
        "matmuls under {PAR_MIN_MACS} multiply-adds run on one thread (thread spawn costs more than such a matmul)"
    );
    if a.json {
        let j = serde_json::json!({
            "checkpoint": a.checkpoint.display().to_string(),
            "arch": ckpt.config.arch(),
            "formats": rt.format_summary(),
            "rtn": a.rtn,
            "activations": a.act,
            "simd": simd,
            "simd_detected": detected,
            "squish_simd_env": forced,
            "threads": a.threads,
            "threads_note": threads_note,
            "reps": reps,
            "prefill_tokens": a.prefill,
            "decode_tokens": a.decode,
            "prefill_tok_s": prefill_tps,
            "decode_tok_s": decode_tps,
            "prefill_ms": pre * 1e3,
            "decode_ms": dec * 1e3,
            "prefill_plus_decode_ms": e2e * 1e3,
            "prefill_cpu_tok_s": prefill_cpu_tps,
            "decode_cpu_tok_s": decode_cpu_tps,
            "loadavg_1m": load,
            "load_ms": load_ms,
            "peak_rss_kb": rss,
        });
        println!("{j}");
    } else {
        println!(
            "checkpoint   {} ({})",
            a.checkpoint.display(),
            ckpt.config.arch()
        );
        println!(
            "formats      {}{}",
            rt.format_summary(),
            a.rtn
                .as_ref()
                .map_or(String::new(), |r| format!(" (RTN {r} g32 at load)"))
        );
        println!(
            "kernel path  {simd} (detected {detected}{}), activations {}",
            forced.map_or(String::new(), |f| format!(", SQUISH_SIMD={f}")),
            a.act
        );
        println!("threads      {} ({threads_note})", a.threads);
        println!(
            "prefill      {:>10.0} tok/s  ({} tokens, {:.3} ms, median of {reps})",
            prefill_tps,
            a.prefill,
            pre * 1e3
        );
        println!(
            "decode       {:>10.0} tok/s  ({} tokens, {:.3} ms)",
            decode_tps,
            a.decode,
            dec * 1e3
        );
        println!(
            "end to end   {:>10.3} ms     (prefill {} + decode {})",
            e2e * 1e3,
            a.prefill,
            a.decode
        );
        if let (Some(p), Some(d)) = (prefill_cpu_tps, decode_cpu_tps) {
            println!(
                "on-CPU       prefill {p:.0} tok/s, decode {d:.0} tok/s (thread CPU time; load average {})",
                load.as_deref().unwrap_or("?")
            );
        }
        println!(
            "peak RSS     {} kB; load {load_ms:.1} ms",
            rss.map_or("?".into(), |r| r.to_string())
        );
    }
    Ok(())
}
