//! Pipeline stage `kernels`: every earlier stage's checkpoint on the native runtime — latency of
//! "prefill 128 + decode 128", prefill and decode tokens/s, at 1 and 2 threads, the kernel path.
//! The same measurement as `cargo xtask bench` (median of repetitions after two warm-ups),
//! repeated in `rounds` interleaved rounds: the 2-vCPU machines this runs on share cores with
//! other tenants and swing by up to 1.6× for seconds at a time, so each point reports the median
//! round (the headline) and the best round (the machine when its neighbours are quiet).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use squish_core::checkpoint;
use squish_kernels::Activations;
use squish_kernels::runtime::{Runtime, RuntimeOptions};

use crate::cmd_bench::{argmax, median};
use crate::pipeline::Ctx;

/// `[stages.kernels]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KernelsStage {
    /// Stages whose checkpoints are benchmarked (those not in `order` are skipped).
    pub inputs: Vec<String>,
    /// Prompt tokens run as one prefill.
    #[serde(default = "default_tokens")]
    pub prefill: usize,
    /// Tokens decoded one by one after the prefill.
    #[serde(default = "default_tokens")]
    pub decode: usize,
    /// Timed repetitions per round (their median is the round's figure).
    #[serde(default = "default_reps")]
    pub reps: usize,
    /// Rounds over all points, interleaved (median and best round are reported).
    #[serde(default = "default_rounds")]
    pub rounds: usize,
    /// Thread counts to measure.
    #[serde(default = "default_threads")]
    pub threads: Vec<usize>,
    /// Activation precisions for quantized weights: `f32` (exact; the one every PPL in the
    /// reports is measured with) and/or `int8` (per-block int8 activations, integer dot products).
    #[serde(default = "default_acts")]
    pub activations: Vec<String>,
}

fn default_acts() -> Vec<String> {
    vec!["f32".into(), "int8".into()]
}

fn default_tokens() -> usize {
    128
}
fn default_reps() -> usize {
    11
}
fn default_rounds() -> usize {
    5
}
fn default_threads() -> Vec<usize> {
    vec![1, 2]
}

/// One checkpoint at one thread count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchPoint {
    /// Stage name.
    pub stage: String,
    /// Checkpoint path.
    pub checkpoint: PathBuf,
    /// Worker threads.
    pub threads: usize,
    /// Activation precision used with quantized weights.
    pub activations: String,
    /// Kernel path.
    pub simd: String,
    /// Tensor formats as the runtime sees them.
    pub formats: String,
    /// Median ms of prefill + decode (median round).
    pub latency_ms: f64,
    /// Median prefill tokens/s (median round).
    pub prefill_tok_s: f64,
    /// Median decode tokens/s (median round).
    pub decode_tok_s: f64,
    /// Best round's median ms of prefill + decode.
    #[serde(default)]
    pub best_latency_ms: f64,
    /// Best round's prefill tokens/s.
    #[serde(default)]
    pub best_prefill_tok_s: f64,
    /// Best round's decode tokens/s.
    #[serde(default)]
    pub best_decode_tok_s: f64,
}

/// Times "prefill `prefill` + decode `decode`" on `rt` (greedy), median of `reps`.
pub fn time_runtime(
    rt: &mut Runtime,
    prefill: usize,
    decode: usize,
    reps: usize,
) -> Result<(f64, f64, f64)> {
    let vocab = rt.vocab_size() as u64;
    let prompt: Vec<u32> = (0..prefill)
        .map(|i| {
            if i == 0 {
                1
            } else {
                ((i as u64 * 7919 + 13) % vocab) as u32
            }
        })
        .collect();
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for rep in 0..reps.max(1) + 2 {
        rt.reset();
        let t = Instant::now();
        let mut next = argmax(rt.prefill(&prompt)?);
        let tp = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..decode {
            next = argmax(rt.step(next)?);
        }
        let td = t.elapsed().as_secs_f64();
        if rep >= 2 {
            pre.push(tp);
            dec.push(td);
        }
    }
    let e2e: Vec<f64> = pre.iter().zip(&dec).map(|(a, b)| a + b).collect();
    Ok((median(e2e), median(pre), median(dec)))
}

/// Runs the stage: (JSON, Markdown).
pub fn run(ctx: &Ctx, c: &KernelsStage, fingerprint: &str) -> Result<(serde_json::Value, String)> {
    // Every (stage, activations, threads) point, its loaded runtime and its per-round timings.
    let mut setups = Vec::new();
    for stage in c.inputs.iter().filter(|s| ctx.cfg.order.contains(s)) {
        let path = ctx.checkpoint_path(stage);
        let ckpt = checkpoint::load(&path)
            .with_context(|| format!("loading {} (run stage `{stage}` first)", path.display()))?;
        let quantized = ckpt
            .weights
            .iter()
            .any(|(_, t)| matches!(t.data, squish_core::checkpoint::TensorData::Quant(_)));
        for (act, &threads) in c
            .activations
            .iter()
            .filter(|a| quantized || a.as_str() == "f32")
            .flat_map(|a| c.threads.iter().map(move |t| (a, t)))
        {
            let opts = RuntimeOptions {
                threads,
                act: match act.as_str() {
                    "f32" => Activations::F32,
                    "int8" => Activations::Int8,
                    other => {
                        anyhow::bail!("[stages.kernels] activations: `{other}` is not f32 or int8")
                    }
                },
                max_batch: c.prefill.max(1),
                ..RuntimeOptions::default()
            };
            let rt = Runtime::load_with(&ckpt, opts)?;
            setups.push((
                stage.clone(),
                path.clone(),
                act.clone(),
                threads,
                rt,
                Vec::new(),
            ));
        }
    }
    for round in 0..c.rounds.max(1) {
        for (stage, _, act, threads, rt, timings) in &mut setups {
            let t = time_runtime(rt, c.prefill, c.decode, c.reps)?;
            println!(
                "  [kernels] round {}/{}: {stage} ×{threads} act {act}: {:.3} ms",
                round + 1,
                c.rounds.max(1),
                t.0 * 1e3
            );
            timings.push(t);
        }
    }
    let mut points = Vec::new();
    for (stage, path, act, threads, rt, timings) in setups {
        let per_s = |n: usize, s: f64| if n > 0 { n as f64 / s } else { 0.0 };
        let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let e2e: Vec<f64> = timings.iter().map(|t| t.0).collect();
        let pre: Vec<f64> = timings.iter().map(|t| t.1).collect();
        let dec: Vec<f64> = timings.iter().map(|t| t.2).collect();
        let p = BenchPoint {
            stage,
            checkpoint: path,
            threads,
            activations: act,
            simd: rt.level().as_str().to_string(),
            formats: rt.format_summary().to_string(),
            latency_ms: median(e2e.clone()) * 1e3,
            prefill_tok_s: per_s(c.prefill, median(pre.clone())),
            decode_tok_s: per_s(c.decode, median(dec.clone())),
            best_latency_ms: fastest(&e2e) * 1e3,
            best_prefill_tok_s: per_s(c.prefill, fastest(&pre)),
            best_decode_tok_s: per_s(c.decode, fastest(&dec)),
        };
        println!(
            "  [kernels] {} ×{} act {}: {:.3} ms median round, {:.3} ms best (prefill {:.0} tok/s, decode {:.0} tok/s)",
            p.stage,
            p.threads,
            p.activations,
            p.latency_ms,
            p.best_latency_ms,
            p.prefill_tok_s,
            p.decode_tok_s
        );
        points.push(p);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let json = json!({
        "stage": "kernels",
        "command": format!("cargo xtask bench --checkpoint <stage checkpoint> --threads N --prefill {} --decode {} --reps {} (× {} rounds)", c.prefill, c.decode, c.reps, c.rounds.max(1)),
        "fingerprint": fingerprint,
        "points": points,
        "loadavg": load.trim(),
        "settings": c,
    });
    let mut md = format!(
        "# Stage `kernels` — the native runtime on every stage's checkpoint\n\nLatency of \"prefill {} + decode {}\" (greedy): each round is the median of {} runs after 2 warm-ups; {} rounds over all points, interleaved. \"median\" is the median round, \"best\" the fastest round (the shared 2-vCPU host swings by up to 1.6× while neighbours run). Load average at the end: {}.\n\n| stage | threads | activations | kernel path | formats | prefill+decode ms (median / best) | prefill tok/s (median / best) | decode tok/s (median / best) |\n|---|---|---|---|---|---|---|---|\n",
        c.prefill,
        c.decode,
        c.reps,
        c.rounds.max(1),
        load.trim()
    );
    for p in &points {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} / {:.3} | {:.0} / {:.0} | {:.0} / {:.0} |\n",
            p.stage,
            p.threads,
            p.activations,
            p.simd,
            p.formats,
            p.latency_ms,
            p.best_latency_ms,
            p.prefill_tok_s,
            p.best_prefill_tok_s,
            p.decode_tok_s,
            p.best_decode_tok_s
        ));
    }
    Ok((json, md))
}
