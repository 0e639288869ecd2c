//! `cargo xtask bench`: speed of the native runtime on a checkpoint — prefill and
//! decode throughput, end-to-end latency, peak RSS, kernel path and tensor formats.
//! Also home of [`Engine`], the `--engine native|burn` choice of `eval`/`generate`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use squish_core::checkpoint;
use squish_core::quant::QBits;
use squish_kernels::dispatch;
use squish_kernels::runtime::{PAR_MIN_MACS, Runtime, RuntimeOptions, rtn_quantize};
use squish_kernels::speed::{parse_activations, time_runtime};

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
    /// Threads of the runtime's persistent worker pool (matmuls below PAR_MIN_MACS stay on the
    /// calling thread).
    #[arg(long, default_value_t = 1, value_parser = crate::common::at_least_one)]
    pub threads: usize,
    /// Prompt tokens run as one prefill.
    #[arg(long, default_value_t = 128)]
    pub prefill: usize,
    /// Tokens decoded one by one after the prefill.
    #[arg(long, default_value_t = 128)]
    pub decode: usize,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 21, value_parser = crate::common::at_least_one)]
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

/// Peak resident set size in kB (`VmHWM` of /proc/self/status), if available.
fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
    let act = parse_activations(&a.act).context("--act")?;
    let opts = RuntimeOptions {
        threads: a.threads,
        act,
        max_batch: a.prefill.max(1),
        ..RuntimeOptions::default()
    };
    let t0 = Instant::now();
    let mut rt = Runtime::load_with(&ckpt, opts)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t = time_runtime(&mut rt, a.prefill, a.decode, a.reps)
        .with_context(|| format!("benchmarking {}", a.checkpoint.display()))?;
    let reps = a.reps.max(1);
    let (pre, dec, e2e) = (t.prefill_s, t.decode_s, t.total_s);
    // On-CPU time of this thread: excludes time the OS gave the core to other processes.
    let prefill_cpu_tps = t.prefill_cpu_s.map(|c| a.prefill as f64 / c);
    let decode_cpu_tps = t.decode_cpu_s.map(|c| {
        if a.decode > 0 {
            a.decode as f64 / c
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
        "persistent worker pool; matmuls under {PAR_MIN_MACS} multiply-adds stay on the calling thread (the hand-off costs more)"
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
