//! Interleaved runtime comparisons and per-operation profiles, every SIMD path in one process.
//!
//! ```text
//! cargo run --release -p squish-kernels --example rtbench -- compare <model> [rounds] [reps]
//! cargo run --release -p squish-kernels --example rtbench -- profile <model> [reps]
//! ```
//! `<model>` is a checkpoint path or `ssm-random` (the phase7 baseline SsmMoe shape, random
//! weights, seed 1). `compare` times "prefill 128 + decode 128" for every (kernel path, weights
//! F32 vs RTN INT4 g32 with int8 activations, 1 vs 2 threads) point in interleaved rounds (each
//! round's figure is the median of `reps` runs; the median round is reported) and prints the
//! ratios. `profile` prints each operation's exclusive time per prefill of 128 tokens and per
//! decoded token (1 thread).

use squish_core::checkpoint::{self, Weights};
use squish_core::config::{ModelConfig, SsmMoeConfig};
use squish_core::quant::QBits;
use squish_kernels::runtime::{Runtime, RuntimeOptions, profile, rtn_quantize};
use squish_kernels::speed::{argmax, bench_prompt, median, time_runtime};
use squish_kernels::{Activations, SimdLevel, dispatch};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const PREFILL: usize = 128;
const DECODE: usize = 128;

fn model(spec: &str) -> Res<(ModelConfig, Weights)> {
    if spec == "ssm-random" {
        let c: SsmMoeConfig = serde_json::from_str(
            r#"{"d_model":64,"n_layers":3,"vocab_size":512,"seq_len":256,"d_inner":128,"d_state":16,"d_conv":4,"dt_rank":4,"n_experts":4,"top_k":2,"expert_hidden":72,"norm_eps":1e-5}"#,
        )?;
        let w = squish_core::model::ssm_moe_weights::init_weights(&c, 1)?;
        return Ok((ModelConfig::SsmMoe(c), w));
    }
    let ck = checkpoint::load(std::path::Path::new(spec))?;
    Ok((ck.config, ck.weights))
}

/// The SIMD levels compared: AVX2 and the best detected (when different).
fn levels() -> Vec<SimdLevel> {
    let mut v: Vec<SimdLevel> = dispatch::supported()
        .into_iter()
        .filter(|l| *l != SimdLevel::Scalar && *l != SimdLevel::Avx512)
        .collect();
    v.dedup();
    v
}

fn load(
    c: &ModelConfig,
    w: &Weights,
    level: SimdLevel,
    act: Activations,
    threads: usize,
) -> Res<Runtime> {
    let opts = RuntimeOptions {
        level: Some(level),
        act,
        threads,
        max_batch: PREFILL,
    };
    Ok(Runtime::from_weights(c, w, opts)?)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

fn compare(c: &ModelConfig, w: &Weights, q4: &Weights, rounds: usize, reps: usize) -> Res<()> {
    // (level, format, threads, runtime, prefill s per round, decode s per round, on-CPU s of
    // the calling thread per round: prefill, decode)
    let mut pts = Vec::new();
    for level in levels() {
        for (fmt, ws, act) in [
            ("f32", w, Activations::F32),
            ("int4+a8", q4, Activations::Int8),
        ] {
            for threads in [1, 2] {
                let rt = load(c, ws, level, act, threads)?;
                pts.push((
                    level,
                    fmt,
                    threads,
                    rt,
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                ));
            }
        }
    }
    println!("load before: {}", loadavg().trim());
    for _ in 0..rounds {
        for (_, _, _, rt, pre, dec, cpre, cdec) in &mut pts {
            let t = time_runtime(rt, PREFILL, DECODE, reps)?;
            pre.push(t.prefill_s);
            dec.push(t.decode_s);
            cpre.push(t.prefill_cpu_s.unwrap_or(f64::NAN));
            cdec.push(t.decode_cpu_s.unwrap_or(f64::NAN));
        }
    }
    println!("load after:  {}", loadavg().trim());
    println!(
        "\n| path | weights | threads | prefill {PREFILL} tok/s | decode tok/s | prefill+decode ms | on-CPU prefill tok/s | on-CPU decode tok/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut med = Vec::new();
    for (level, fmt, threads, _, pre, dec, cpre, cdec) in &pts {
        let (p, d) = (median(pre.clone()), median(dec.clone()));
        let both: Vec<f64> = pre.iter().zip(dec).map(|(a, b)| a + b).collect();
        println!(
            "| {} | {fmt} | {threads} | {:.0} | {:.0} | {:.3} | {:.0} | {:.0} |",
            level.as_str(),
            PREFILL as f64 / p,
            DECODE as f64 / d,
            median(both) * 1e3,
            PREFILL as f64 / median(cpre.clone()),
            DECODE as f64 / median(cdec.clone()),
        );
        med.push((
            *level,
            *fmt,
            *threads,
            pre.clone(),
            dec.clone(),
            cpre.clone(),
            cdec.clone(),
        ));
    }
    // Ratios per round (interleaved neighbours), then their median.
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let find = |l: SimdLevel, f: &str, t: usize| {
        med.iter()
            .find(|m| m.0 == l && m.1 == f && m.2 == t)
            .expect("point")
    };
    println!("\nratios (median over rounds of the per-round ratio):");
    for level in levels() {
        for t in [1, 2] {
            let (f, q) = (find(level, "f32", t), find(level, "int4+a8", t));
            println!(
                "  {} {t} thr: INT4/F32 speed  prefill {:.2}x  decode {:.2}x   (on-CPU: prefill {:.2}x  decode {:.2}x)",
                level.as_str(),
                ratio(&f.3, &q.3),
                ratio(&f.4, &q.4),
                ratio(&f.5, &q.5),
                ratio(&f.6, &q.6)
            );
        }
        for fmt in ["f32", "int4+a8"] {
            let (a, b) = (find(level, fmt, 1), find(level, fmt, 2));
            println!(
                "  {} {fmt}: 2 thr / 1 thr speed  prefill {:.2}x  decode {:.2}x",
                level.as_str(),
                ratio(&a.3, &b.3),
                ratio(&a.4, &b.4)
            );
        }
    }
    Ok(())
}

/// Per-op median over `reps` runs of each op's exclusive seconds (medians resist the
/// preemptions of a shared host better than sums).
fn median_ops(runs: &[Vec<profile::OpTime>]) -> Vec<(&'static str, f64)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|o| {
            let v = runs
                .iter()
                .map(|r| r.iter().find(|x| x.op == o.op).map_or(0.0, |x| x.seconds))
                .collect();
            (o.op, median(v))
        })
        .collect()
}

type Ops = Vec<(&'static str, f64)>;

/// Per-op medians of one prefill of [`PREFILL`] tokens and of [`DECODE`] decode steps.
fn profile_one(rt: &mut Runtime, reps: usize) -> Res<(Ops, Ops)> {
    let prompt = bench_prompt(PREFILL, rt.vocab_size());
    rt.reset();
    rt.prefill(&prompt)?; // warm-up
    profile::enable(true);
    profile::take();
    let (mut pre, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        rt.reset();
        let mut next = argmax(rt.prefill(&prompt)?);
        pre.push(profile::take());
        for _ in 0..DECODE {
            next = argmax(rt.step(next)?);
        }
        dec.push(profile::take());
    }
    profile::enable(false);
    Ok((median_ops(&pre), median_ops(&dec)))
}

fn profile(c: &ModelConfig, w: &Weights, q4: &Weights, reps: usize) -> Res<()> {
    println!("load before: {}", loadavg().trim());
    for (level, threads) in levels().into_iter().flat_map(|l| [(l, 1), (l, 2)]) {
        for (fmt, ws, act) in [
            ("f32", w, Activations::F32),
            ("int4+a8", q4, Activations::Int8),
        ] {
            let mut rt = load(c, ws, level, act, threads)?;
            let (pre, dec) = profile_one(&mut rt, reps)?;
            let tp: f64 = pre.iter().map(|t| t.1).sum();
            let td: f64 = dec.iter().map(|t| t.1).sum();
            println!(
                "\n{} {fmt} ({threads} thread(s); per-op medians of {reps} runs, the calling thread's wall time): prefill {PREFILL} = {:.1} µs, decode = {:.2} µs/token",
                level.as_str(),
                tp * 1e6,
                td / DECODE as f64 * 1e6
            );
            println!("| op | prefill µs | % | decode µs/token | % |");
            println!("|---|---|---|---|---|");
            for (op, p) in &pre {
                let d = dec.iter().find(|d| d.0 == *op).map_or(0.0, |d| d.1);
                println!(
                    "| {op} | {:.1} | {:.0} | {:.2} | {:.0} |",
                    p * 1e6,
                    100.0 * p / tp,
                    d / DECODE as f64 * 1e6,
                    100.0 * d / td
                );
            }
        }
    }
    println!("load after:  {}", loadavg().trim());
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: rtbench compare|profile <checkpoint|ssm-random> [rounds] [reps]";
    let (mode, spec) = match (args.first(), args.get(1)) {
        (Some(m), Some(s)) => (m.as_str(), s.as_str()),
        _ => return Err(usage.into()),
    };
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (c, w) = model(spec)?;
    let q4 = rtn_quantize(&w, QBits::Int4, 32)?;
    match mode {
        "compare" => compare(&c, &w, &q4, num(2, 5), num(3, 11)),
        "profile" => profile(&c, &w, &q4, num(2, 20)),
        _ => Err(usage.into()),
    }
}
