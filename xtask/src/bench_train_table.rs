//! `cargo xtask bench-train --json`: training tokens/s and achieved GFLOP/s (6·N·tokens/s) of
//! the two workloads the pipeline trains — the SsmMoe baseline (the config's model and batch
//! shape, plain cross-entropy) and stories260K QAT (INT4 g64 fake-quant with pure distillation
//! from the F32 model, `QatConfig`'s default 8 × 256 batches) — per mode, in interleaved rounds:
//!
//! - `before`: today's code path before data parallelism — one micro-batch, dense MoE, the fused
//!   scan on all threads (what `train` did when this benchmark was added);
//! - `threads1` / `threads2`: micro-batches ([`TrainConfig::micro_batches`]) and routed MoE on a
//!   thread budget of 1 and 2.
//!
//! Each mode also reports user-CPU seconds per wall second and tokens per CPU-second (the
//! efficiency, independent of how much of a shared host the run got). Next to diagnose's FP32
//! GFLOP/s when `<report_dir>/<run>_hardware_check.json` exists.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;
use squish_core::checkpoint::Checkpoint;
use squish_core::config::ModelConfig;
use squish_core::data::Rng;
use squish_core::model::CpuBackend;
use squish_core::model::llama::Llama;
use squish_core::model::moe_routed::MoeMode;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::threads::with_budget;
use squish_core::train::{TrainConfig, Trainable, train};
use squish_quant::qat::{QatConfig, qat_net};

use crate::pipeline::PipelineConfig;

/// One measured mode.
#[derive(Clone, Copy, Debug)]
struct Mode {
    name: &'static str,
    threads: usize,
    micro_batches: usize,
    moe: MoeMode,
}

const MODES: [Mode; 3] = [
    Mode {
        name: "before",
        threads: 2,
        micro_batches: 1,
        moe: MoeMode::Dense,
    },
    Mode {
        name: "threads1",
        threads: 1,
        micro_batches: 2,
        moe: MoeMode::Routed,
    },
    Mode {
        name: "threads2",
        threads: 2,
        micro_batches: 2,
        moe: MoeMode::Routed,
    },
];

/// CPU seconds (user, system) of this process so far, from `/proc/self/stat` (0 elsewhere).
fn cpu_seconds() -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15 (1-based).
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (tick(11), tick(12))
}

/// Tokens/s and user-CPU seconds per wall second of `steps` steps of `model` (after one
/// warm-up step) on `budget` threads, with an optional teacher.
fn time_train<M: Trainable>(
    model: M,
    stream: &[u32],
    cfg: &TrainConfig,
    steps: usize,
    budget: usize,
    teacher: Option<squish_core::train::Teacher>,
) -> Result<(f64, f64)> {
    with_budget(budget, || {
        let c = |steps| TrainConfig {
            steps,
            eval_every: 0,
            eval_chunks: 1,
            ..cfg.clone()
        };
        let (model, _) = train(model, stream, stream, 1, &c(1), teacher, |_| {})?;
        let (u0, _) = cpu_seconds();
        let t0 = std::time::Instant::now();
        train(model, stream, stream, 1, &c(steps), teacher, |_| {})?;
        let wall = t0.elapsed().as_secs_f64();
        let (u1, _) = cpu_seconds();
        let tokens = (steps * cfg.batch_size * cfg.seq_len) as f64;
        Ok((tokens / wall, (u1 - u0) / wall))
    })
}

/// Diagnose's FP32 GFLOP/s (one thread, all threads: medians) from a saved hardware report.
fn diagnose_fp32(path: &Path) -> Option<(f64, f64)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let b = &v["benchmarks"];
    Some((
        b["fp32_1t"]["median"].as_f64()?,
        b["fp32_all"]["median"].as_f64()?,
    ))
}

/// Arguments of the table (from `bench-train`'s flags).
pub struct TableArgs<'a> {
    /// Pipeline config of the SsmMoe workload.
    pub config: &'a Path,
    /// The llama2.c stories260K checkpoint (`None`: skip that workload).
    pub stories260k: Option<&'a PathBuf>,
    /// Timed steps per measurement.
    pub steps: usize,
    /// Interleaved rounds.
    pub rounds: usize,
}

/// Runs the table and prints one JSON object.
pub fn run(a: &TableArgs) -> Result<()> {
    let cfg = PipelineConfig::load(a.config)?;
    let Some(b) = cfg.stages.baseline else {
        bail!("{} has no [stages.baseline]", a.config.display())
    };
    let mut mc = b.model.clone();
    mc.vocab_size = b.vocab_size;
    let ssm_w = init_weights(&mc, b.seed)?;
    let ssm_params = ssm_w.param_count();
    let mut rng = Rng::new(1);
    let ssm_stream: Vec<u32> = (0..200_000)
        .map(|_| rng.below(b.vocab_size) as u32)
        .collect();
    let llama = match a.stories260k {
        Some(p) => {
            let (c, w) = squish_core::llama2c::import(p)
                .with_context(|| format!("importing {}", p.display()))?;
            let ckpt = Checkpoint {
                config: ModelConfig::Llama(c.clone()),
                weights: w,
                provenance: Default::default(),
                metrics: Default::default(),
                tokenizer: None,
            };
            let mut rng = Rng::new(2);
            let stream: Vec<u32> = (0..200_000)
                .map(|_| rng.below(c.vocab_size) as u32)
                .collect();
            Some((ckpt, c, stream))
        }
        None => None,
    };
    let qat_cfg = QatConfig::default();
    let ad = CpuBackend::Flex.autodiff_device();
    let teacher_model = match &llama {
        Some((ckpt, c, _)) => Some(Llama::from_weights(
            c,
            &ckpt.weights,
            &CpuBackend::Flex.device(),
        )?),
        None => None,
    };
    let teach = teacher_model
        .as_ref()
        .map(|m| squish_core::train::teacher_from(m, ad.clone()));
    let rounds = a.rounds.max(1);
    // (workload, mode) → per-round (tokens/s, cpu/wall).
    let mut ssm = vec![Vec::new(); MODES.len()];
    let mut qat = vec![Vec::new(); MODES.len()];
    for round in 0..rounds {
        for (i, m) in MODES.iter().enumerate() {
            let mut model = SsmMoe::from_weights(&mc, &ssm_w, &ad, ScanMode::Fused)?;
            model.moe = m.moe;
            let tc = TrainConfig {
                micro_batches: m.micro_batches,
                ..b.train.clone()
            };
            let r = time_train(model, &ssm_stream, &tc, a.steps, m.threads, None)?;
            eprintln!(
                "round {} ssm_moe  {:<9} {:>8.0} tokens/s  cpu/wall {:.2}",
                round + 1,
                m.name,
                r.0,
                r.1
            );
            ssm[i].push(r);
            if let Some((ckpt, _, stream)) = &llama {
                let net = qat_net(ckpt, &qat_cfg, None)?;
                let tc = TrainConfig {
                    micro_batches: m.micro_batches,
                    ..qat_cfg.train.clone()
                };
                let r = time_train(
                    net,
                    stream,
                    &tc,
                    a.steps,
                    m.threads,
                    teach.as_ref().map(|t| t as _),
                )?;
                eprintln!(
                    "round {} qat_260k {:<9} {:>8.0} tokens/s  cpu/wall {:.2}",
                    round + 1,
                    m.name,
                    r.0,
                    r.1
                );
                qat[i].push(r);
            }
        }
    }
    let llama_params = llama
        .as_ref()
        .map_or(0, |(c, _, _)| c.weights.param_count());
    let hw = cfg
        .run
        .report_dir
        .join(format!("{}_hardware_check.json", cfg.run.name));
    let fp32 = diagnose_fp32(&hw);
    let summarize = |name: &str,
                     params: usize,
                     batch: usize,
                     seq: usize,
                     rows: &[Vec<(f64, f64)>]| {
        let modes: Vec<serde_json::Value> = MODES
            .iter()
            .zip(rows)
            .map(|(m, r)| {
                let mut tps: Vec<f64> = r.iter().map(|x| x.0).collect();
                tps.sort_by(f64::total_cmp);
                let med = tps[tps.len() / 2];
                let gflops = 6.0 * params as f64 * med / 1e9;
                // Load-independent efficiency on a shared host: tokens per CPU-second.
                let mut per_cpu: Vec<f64> = r
                    .iter()
                    .filter(|x| x.1 > 0.0)
                    .map(|x| x.0 / x.1)
                    .collect();
                per_cpu.sort_by(f64::total_cmp);
                let per_cpu = per_cpu.get(per_cpu.len() / 2).copied();
                json!({"mode": m.name, "threads": m.threads, "micro_batches": m.micro_batches,
                    "moe": m.moe, "tokens_per_s": med, "tokens_per_s_rounds": tps,
                    "cpu_per_wall_rounds": r.iter().map(|x| x.1).collect::<Vec<_>>(),
                    "gflops_6n": gflops, "tokens_per_cpu_s": per_cpu,
                    "fraction_of_diagnose_fp32": fp32.map(|(one, all)| gflops / if m.threads > 1 { all } else { one })})
            })
            .collect();
        let base = modes[0]["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        let best = modes[2]["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        json!({"workload": name, "parameters": params, "batch": batch, "seq_len": seq,
            "modes": modes, "speedup_threads2_vs_before": best / base})
    };
    let mut out = vec![summarize(
        "ssm_moe_baseline",
        ssm_params,
        b.train.batch_size,
        b.train.seq_len,
        &ssm,
    )];
    if llama.is_some() {
        out.push(summarize(
            "stories260k_qat_int4",
            llama_params,
            qat_cfg.train.batch_size,
            qat_cfg.train.seq_len,
            &qat,
        ));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "config": a.config, "steps": a.steps, "rounds": rounds,
            "diagnose_fp32_gflops": fp32.map(|(one, all)| json!({"threads1": one, "all_threads": all, "source": hw})),
            "scan_isa": format!("{:?}", squish_core::model::scan_kernel::ScanIsa::detect()),
            "workloads": out,
        }))?
    );
    Ok(())
}
