//! `cargo xtask bench-train`: training tokens/s of the SsmMoe baseline under each scan
//! formulation and burn backend, measured in one run so the ratios are comparable.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde_json::json;
use squish_core::data::Rng;
use squish_core::model::CpuBackend;
use squish_core::model::scan_bench::{time_scan, time_scan_kernel, time_train_steps};
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::train::{TrainConfig, train};

use crate::pipeline::PipelineConfig;

/// Arguments of `bench-train`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchTrainArgs {
    /// Pipeline config whose `[stages.baseline]` model and batch shape are measured.
    #[arg(long, default_value = "configs/phase7.toml")]
    pub config: PathBuf,
    /// Timed optimizer steps per variant (after one warm-up step).
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// Variants as `backend:scan`, scan = `sequential`, `fused` or `chunked<K>`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "flex:sequential,flex:fused,flex:chunked16,ndarray:chunked16"
    )]
    pub variants: Vec<String>,
    /// Also time the parts of a step (forward, backward, optimizer) and the scan alone
    /// (forward, backward) per variant.
    #[arg(long)]
    pub breakdown: bool,
    /// Rounds: each round measures every variant once, in order, so load swings on a shared
    /// host hit all variants alike; the summary gives each variant's median and best round.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Instead of the variants: the table of the SsmMoe baseline and stories260K QAT at 1 and 2
    /// threads against the pre-data-parallel path (tokens/s, 6·N GFLOP/s), as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// llama2.c stories260K checkpoint for `--json` (skipped with a note if absent).
    #[arg(
        long,
        default_value = "../shared/data/models/stories260K/stories260K.bin"
    )]
    pub stories260k: PathBuf,
}

fn parse_variant(v: &str) -> Result<(CpuBackend, ScanMode)> {
    let Some((b, s)) = v.split_once(':') else {
        bail!("variant `{v}` is not backend:scan")
    };
    let scan = match s {
        "sequential" => ScanMode::Sequential,
        "fused" => ScanMode::Fused,
        _ => match s.strip_prefix("chunked").and_then(|k| k.parse().ok()) {
            Some(k) => ScanMode::Chunked(k),
            None => bail!("scan `{s}` is not sequential, fused or chunked<K>"),
        },
    };
    Ok((CpuBackend::parse(b)?, scan))
}

/// Per-part seconds per step and the scan alone (all layers' shapes), printed and returned.
fn breakdown(
    model_cfg: &squish_core::config::SsmMoeConfig,
    weights: &squish_core::checkpoint::Weights,
    backend: CpuBackend,
    scan: ScanMode,
    stream: &[u32],
    train_cfg: &TrainConfig,
    steps: usize,
) -> Result<serde_json::Value> {
    let device = backend.autodiff_device();
    let model = SsmMoe::from_weights(model_cfg, weights, &device, scan)?;
    let (model, _) = time_train_steps(model, stream, train_cfg, 1)?; // warm-up
    let (_, t) = time_train_steps(model, stream, train_cfg, steps)?;
    let k = steps.max(1) as f64;
    let (fwd, bwd, opt) = (t.forward / k, t.backward / k, t.optimizer / k);
    let shape = [
        train_cfg.batch_size,
        train_cfg.seq_len,
        model_cfg.d_inner,
        model_cfg.d_state,
    ];
    time_scan(scan, shape, &device, 1)?; // warm-up
    let (sf, sb) = time_scan(scan, shape, &device, steps)?;
    let layers = model_cfg.n_layers as f64;
    println!(
        "    per step: forward {fwd:.3} s, backward {bwd:.3} s, optimizer {opt:.3} s; \
         scan alone × {layers} layers: forward {:.3} s, backward {:.3} s",
        sf * layers,
        sb * layers
    );
    let mut row = json!({"forward_s": fwd, "backward_s": bwd, "optimizer_s": opt,
        "scan_forward_s_all_layers": sf * layers, "scan_backward_s_all_layers": sb * layers});
    if scan == ScanMode::Fused {
        time_scan_kernel(shape, 1); // warm-up
        let (kf, kb) = time_scan_kernel(shape, steps);
        println!(
            "    fused kernels alone (no burn) × {layers} layers: forward {:.3} s, backward {:.3} s",
            kf * layers,
            kb * layers
        );
        row["kernel_forward_s_all_layers"] = json!(kf * layers);
        row["kernel_backward_s_all_layers"] = json!(kb * layers);
    }
    Ok(row)
}

/// Entry point of `bench-train`.
pub fn run(a: &BenchTrainArgs) -> Result<()> {
    if a.json {
        let found = a.stories260k.is_file();
        if !found {
            eprintln!(
                "note: {} not found, stories260K QAT skipped",
                a.stories260k.display()
            );
        }
        return crate::bench_train_table::run(&crate::bench_train_table::TableArgs {
            config: &a.config,
            stories260k: found.then_some(&a.stories260k),
            steps: a.steps,
            rounds: a.rounds,
        });
    }
    let cfg = PipelineConfig::load(&a.config)?;
    let Some(b) = cfg.stages.baseline else {
        bail!("{} has no [stages.baseline]", a.config.display())
    };
    let mut model_cfg = b.model.clone();
    model_cfg.vocab_size = b.vocab_size;
    // Synthetic token stream: the cost of a step does not depend on the token values.
    let mut rng = Rng::new(1);
    let stream: Vec<u32> = (0..200_000)
        .map(|_| rng.below(b.vocab_size) as u32)
        .collect();
    let weights = init_weights(&model_cfg, b.seed)?;
    let parsed = a
        .variants
        .iter()
        .map(|v| parse_variant(v))
        .collect::<Result<Vec<_>>>()?;
    let rounds = a.rounds.max(1);
    let mut tps = vec![Vec::with_capacity(rounds); parsed.len()];
    for round in 0..rounds {
        for (i, (v, &(backend, scan))) in a.variants.iter().zip(&parsed).enumerate() {
            let model =
                SsmMoe::from_weights(&model_cfg, &weights, &backend.autodiff_device(), scan)?;
            let (t, loss) = measure(model, &stream, &b.train, a.steps)?;
            println!(
                "{v:<24} {t:>9.0} tokens/s  ({:.3} s/step, loss {loss:.3}){}",
                (b.train.batch_size * b.train.seq_len) as f64 / t,
                if rounds > 1 {
                    format!("  round {}", round + 1)
                } else {
                    String::new()
                }
            );
            tps[i].push(t);
        }
    }
    let mut results = Vec::new();
    let mut first_median = None;
    for (i, (v, &(backend, scan))) in a.variants.iter().zip(&parsed).enumerate() {
        let mut sorted = tps[i].clone();
        sorted.sort_by(f64::total_cmp);
        let (median, best) = (sorted[sorted.len() / 2], sorted[sorted.len() - 1]);
        let base = *first_median.get_or_insert(median);
        if rounds > 1 {
            println!(
                "{v:<24} median {median:>9.0} tokens/s, best {best:>9.0} ({:.2}× the first variant's median)",
                median / base
            );
        }
        let mut row = json!({"variant": v, "tokens_per_s": median, "tokens_per_s_best": best,
            "tokens_per_s_rounds": tps[i], "seconds_per_step": (b.train.batch_size * b.train.seq_len) as f64 / median,
            "batch": b.train.batch_size, "seq_len": b.train.seq_len});
        if a.breakdown {
            println!("{v}:");
            row["breakdown"] = breakdown(
                &model_cfg, &weights, backend, scan, &stream, &b.train, a.steps,
            )?;
        }
        results.push(row);
    }
    println!(
        "{}",
        serde_json::to_string(
            &json!({"config": a.config, "steps": a.steps, "rounds": rounds, "results": results})
        )?
    );
    Ok(())
}

/// Tokens/s of `steps` training steps of `model` after one warm-up step, and the last loss.
fn measure(
    model: SsmMoe,
    stream: &[u32],
    train_cfg: &TrainConfig,
    steps: usize,
) -> Result<(f64, f64)> {
    let cfg = |steps| TrainConfig {
        steps,
        eval_every: 0,
        eval_chunks: 1,
        ..train_cfg.clone()
    };
    let (model, _) = train(model, stream, stream, 1, &cfg(1), None, |_| {})?;
    let t0 = std::time::Instant::now();
    let (_, log) = train(model, stream, stream, 1, &cfg(steps), None, |_| {})?;
    let secs = t0.elapsed().as_secs_f64();
    let tokens = steps * train_cfg.batch_size * train_cfg.seq_len;
    Ok((
        tokens as f64 / secs,
        log.last().map_or(f64::NAN, |p| p.loss),
    ))
}
