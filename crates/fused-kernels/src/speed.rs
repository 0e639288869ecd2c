//! The runtime's speed on checkpoints, measured one way for `cargo xtask bench` and the
//! pipeline's `kernels` stage: "prefill `p` + decode `d`" (greedy) on a fixed prompt, the median
//! of `reps` timed runs after two warm-ups; [`run`] repeats that in interleaved rounds over every
//! (checkpoint, activations, threads) point and reports the median round (the headline) and the
//! best round — the 2-vCPU machines this runs on share cores with other tenants and swing by up
//! to 1.6× for seconds at a time.
//!
//! ```no_run
//! use squish_kernels::speed::{KernelsSettings, run};
//!
//! let settings: KernelsSettings = toml::from_str("inputs = [\"baseline\"]\nrounds = 3").unwrap();
//! let checkpoints = [("baseline".to_string(), "checkpoints/phase7/baseline/model.safetensors".into())];
//! for p in run(&checkpoints, &settings, &mut |e| eprintln!("{e:?}"))? {
//!     println!("{} ×{}: {:.3} ms", p.stage, p.threads, p.latency_ms);
//! }
//! # Ok::<(), squish_core::Error>(())
//! ```

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use squish_core::checkpoint::{self, TensorData};
use squish_core::{Error, Result};

use crate::matmul::Activations;
use crate::runtime::{Runtime, RuntimeOptions};

/// The pipeline's `[stages.kernels]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KernelsSettings {
    /// Stages whose checkpoints are benchmarked (those not in the pipeline's `order` are skipped).
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

/// Parses an activation precision name (`f32` / `int8`).
pub fn parse_activations(name: &str) -> Result<Activations> {
    match name {
        "f32" => Ok(Activations::F32),
        "int8" => Ok(Activations::Int8),
        other => Err(Error::invalid(format!(
            "activations `{other}`: expected f32 or int8"
        ))),
    }
}

/// One checkpoint at one thread count and activation precision.
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

/// What [`run`] reports while it works.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeedEvent {
    /// One point's round finished: stage, threads, activations, prefill + decode seconds.
    Round {
        /// 0-based round.
        round: usize,
        /// Rounds in all.
        rounds: usize,
        /// Stage name.
        stage: String,
        /// Worker threads.
        threads: usize,
        /// Activation precision.
        activations: String,
        /// Median seconds of prefill + decode in this round.
        seconds: f64,
    },
}

/// Median seconds of one timed measurement (see [`time_runtime`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Prefill + decode.
    pub total_s: f64,
    /// Prefill alone.
    pub prefill_s: f64,
    /// Decode alone.
    pub decode_s: f64,
    /// Prefill on-CPU seconds of the calling thread (excludes time the OS gave the core to
    /// other processes), where the OS tells.
    pub prefill_cpu_s: Option<f64>,
    /// Decode on-CPU seconds of the calling thread.
    pub decode_cpu_s: Option<f64>,
}

/// The benchmark prompt: BOS (1) then pseudo-random ids below `vocab`.
pub fn bench_prompt(len: usize, vocab: usize) -> Vec<u32> {
    let vocab = vocab.max(1) as u64;
    (0..len)
        .map(|i| {
            if i == 0 {
                (1 % vocab) as u32
            } else {
                ((i as u64 * 7919 + 13) % vocab) as u32
            }
        })
        .collect()
}

/// Times "prefill `prefill` + decode `decode`" (greedy) on `rt`: median of `reps` runs after
/// two warm-ups (caches, branch predictors).
pub fn time_runtime(
    rt: &mut Runtime,
    prefill: usize,
    decode: usize,
    reps: usize,
) -> Result<Timing> {
    if prefill == 0 || prefill + decode > rt.max_positions() {
        return Err(Error::invalid(format!(
            "prefill {prefill} + decode {decode} must be in 1..={} positions",
            rt.max_positions()
        )));
    }
    let prompt = bench_prompt(prefill, rt.vocab_size());
    let reps = reps.max(1);
    let (mut pre, mut dec, mut pre_cpu, mut dec_cpu) = (vec![], vec![], vec![], vec![]);
    for rep in 0..reps + 2 {
        rt.reset();
        let (t, c0) = (Instant::now(), thread_cpu_ns());
        let mut next = argmax(rt.prefill(&prompt)?);
        let (tp, c1) = (t.elapsed().as_secs_f64(), thread_cpu_ns());
        let t = Instant::now();
        for _ in 0..decode {
            next = argmax(rt.step(next)?);
        }
        let (td, c2) = (t.elapsed().as_secs_f64(), thread_cpu_ns());
        if rep >= 2 {
            pre.push(tp);
            dec.push(td);
            if let (Some(c0), Some(c1), Some(c2)) = (c0, c1, c2) {
                pre_cpu.push((c1 - c0) as f64 * 1e-9);
                dec_cpu.push((c2 - c1) as f64 * 1e-9);
            }
        }
    }
    let total: Vec<f64> = pre.iter().zip(&dec).map(|(a, b)| a + b).collect();
    let cpu = pre_cpu.len() == reps;
    Ok(Timing {
        total_s: median(total),
        prefill_s: median(pre),
        decode_s: median(dec),
        prefill_cpu_s: cpu.then(|| median(pre_cpu.clone())),
        decode_cpu_s: cpu.then(|| median(dec_cpu)),
    })
}

/// Measures every (checkpoint, activations, threads) point of `settings` in interleaved rounds.
/// `checkpoints` are `(stage, path)`; `int8` activations are measured only on checkpoints with a
/// quantized tensor.
pub fn run(
    checkpoints: &[(String, PathBuf)],
    settings: &KernelsSettings,
    on_event: &mut dyn FnMut(&SpeedEvent),
) -> Result<Vec<BenchPoint>> {
    let c = settings;
    // Every point, its loaded runtime and its per-round timings.
    let mut setups = Vec::new();
    for (stage, path) in checkpoints {
        let ckpt = checkpoint::load(path)?;
        let quantized = ckpt
            .weights
            .iter()
            .any(|(_, t)| matches!(t.data, TensorData::Quant(_)));
        for act in c
            .activations
            .iter()
            .filter(|a| quantized || a.as_str() == "f32")
        {
            for &threads in &c.threads {
                let opts = RuntimeOptions {
                    threads,
                    act: parse_activations(act)?,
                    max_batch: c.prefill.max(1),
                    ..RuntimeOptions::default()
                };
                let rt = Runtime::load_with(&ckpt, opts)?;
                setups.push((stage, path, act, threads, rt, Vec::new()));
            }
        }
    }
    let rounds = c.rounds.max(1);
    for round in 0..rounds {
        for (stage, _, act, threads, rt, timings) in &mut setups {
            let t = time_runtime(rt, c.prefill, c.decode, c.reps)?;
            on_event(&SpeedEvent::Round {
                round,
                rounds,
                stage: stage.to_string(),
                threads: *threads,
                activations: act.to_string(),
                seconds: t.total_s,
            });
            timings.push(t);
        }
    }
    let per_s = |n: usize, s: f64| if n > 0 { n as f64 / s } else { 0.0 };
    let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(setups
        .into_iter()
        .map(|(stage, path, act, threads, rt, timings)| {
            let total: Vec<f64> = timings.iter().map(|t| t.total_s).collect();
            let pre: Vec<f64> = timings.iter().map(|t| t.prefill_s).collect();
            let dec: Vec<f64> = timings.iter().map(|t| t.decode_s).collect();
            BenchPoint {
                stage: stage.clone(),
                checkpoint: path.clone(),
                threads,
                activations: act.clone(),
                simd: rt.level().as_str().to_string(),
                formats: rt.format_summary().to_string(),
                latency_ms: median(total.clone()) * 1e3,
                prefill_tok_s: per_s(c.prefill, median(pre.clone())),
                decode_tok_s: per_s(c.decode, median(dec.clone())),
                best_latency_ms: fastest(&total) * 1e3,
                best_prefill_tok_s: per_s(c.prefill, fastest(&pre)),
                best_decode_tok_s: per_s(c.decode, fastest(&dec)),
            }
        })
        .collect())
}

/// The Markdown report of [`run`]'s points; `loadavg` is `/proc/loadavg` at the end.
pub fn markdown(points: &[BenchPoint], c: &KernelsSettings, loadavg: &str) -> String {
    let mut md = format!(
        "# Stage `kernels` — the native runtime on every stage's checkpoint\n\nLatency of \"prefill {} + decode {}\" (greedy): each round is the median of {} runs after 2 warm-ups; {} rounds over all points, interleaved. \"median\" is the median round, \"best\" the fastest round (the shared 2-vCPU host swings by up to 1.6× while neighbours run). Load average at the end: {}.\n\n| stage | threads | activations | kernel path | formats | prefill+decode ms (median / best) | prefill tok/s (median / best) | decode tok/s (median / best) |\n|---|---|---|---|---|---|---|---|\n",
        c.prefill,
        c.decode,
        c.reps,
        c.rounds.max(1),
        loadavg
    );
    for p in points {
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
    md
}

/// Median of `v` (0 for an empty `v`).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Index of the largest logit (the greedy token).
pub fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0 as u32
}

/// Nanoseconds of CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`, exact to the
/// nanosecond, unlike the tick-granular `/proc/thread-self/schedstat`).
#[cfg(target_os = "linux")]
pub fn thread_cpu_ns() -> Option<u64> {
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
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout); the libc function only
    // writes it.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Nanoseconds of CPU time this thread has used (not available on this OS).
#[cfg(not(target_os = "linux"))]
pub fn thread_cpu_ns() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_like_the_pipeline_and_reject_unknown_keys() {
        let s: KernelsSettings = toml::from_str("inputs = [\"baseline\"]").unwrap();
        assert_eq!((s.prefill, s.decode, s.reps, s.rounds), (128, 128, 11, 5));
        assert_eq!(s.threads, vec![1, 2]);
        assert_eq!(s.activations, vec!["f32", "int8"]);
        assert!(toml::from_str::<KernelsSettings>("inputs = []\nthread = [1]").is_err());
        assert!(parse_activations("int4").is_err());
    }

    #[test]
    fn prompt_starts_with_bos_and_stays_in_the_vocabulary() {
        let p = bench_prompt(64, 37);
        assert_eq!(p[0], 1);
        assert!(p.iter().all(|&t| t < 37));
        assert_eq!(bench_prompt(3, 1), vec![0, 0, 0]);
    }

    /// `run` on a tiny random SsmMoe file: one point per thread count, `int8` skipped on an F32
    /// checkpoint, one event per point and round, positive timings.
    #[test]
    fn run_measures_every_point_in_every_round() {
        use squish_core::checkpoint::{Checkpoint, Provenance};
        use squish_core::config::{ModelConfig, SsmMoeConfig};
        use squish_core::model::ssm_moe_weights::init_weights;
        let c: SsmMoeConfig = serde_json::from_str(
            r#"{"d_model":16,"n_layers":1,"vocab_size":40,"seq_len":64,"d_inner":16,"d_state":4,"d_conv":4,"dt_rank":2,"n_experts":2,"top_k":1,"expert_hidden":16,"norm_eps":1e-5}"#,
        )
        .unwrap();
        let ckpt = Checkpoint {
            config: ModelConfig::SsmMoe(c.clone()),
            weights: init_weights(&c, 1).unwrap(),
            provenance: Provenance::default(),
            metrics: Default::default(),
            tokenizer: None,
        };
        let dir = std::env::temp_dir().join(format!("squish-speed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        checkpoint::save(&ckpt, &path).unwrap();
        let settings: KernelsSettings = toml::from_str(
            "inputs = [\"a\"]\nprefill = 8\ndecode = 4\nreps = 1\nrounds = 2\nthreads = [1, 2]",
        )
        .unwrap();
        let mut events = 0;
        let points = run(&[("a".into(), path.clone())], &settings, &mut |_| {
            events += 1
        })
        .unwrap();
        assert_eq!(events, 4);
        assert_eq!(
            points.len(),
            2,
            "int8 activations only on quantized checkpoints"
        );
        for p in &points {
            assert!(p.latency_ms > 0.0 && p.best_latency_ms <= p.latency_ms);
            assert!(p.prefill_tok_s > 0.0 && p.decode_tok_s > 0.0);
            assert_eq!(
                (p.activations.as_str(), p.checkpoint.as_path()),
                ("f32", path.as_path())
            );
        }
        assert!(markdown(&points, &settings, "0.1").contains("| a | 2 | f32 |"));
        let no_prompt = KernelsSettings {
            prefill: 0,
            ..settings
        };
        let err = run(&[("a".into(), path)], &no_prompt, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("prefill 0"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn median_and_argmax() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(argmax(&[0.5, 2.0, -1.0, 2.0]), 1);
    }
}
