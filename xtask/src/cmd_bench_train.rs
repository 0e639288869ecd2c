//! `cargo xtask bench-train`: training tokens/s of the SsmMoe baseline under each scan
//! formulation and burn backend, measured in one run so the ratios are comparable.

use std::path::PathBuf;

use anyhow::{Result, bail};
use serde_json::json;
use squish_core::data::Rng;
use squish_core::model::CpuBackend;
use squish_core::model::scan_bench::{time_scan, time_train_steps};
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
        default_value = "flex:sequential,flex:chunked16,ndarray:chunked16"
    )]
    pub variants: Vec<String>,
    /// Also time the parts of a step (forward, backward, optimizer) and the scan alone
    /// (forward, backward) per variant.
    #[arg(long)]
    pub breakdown: bool,
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
    Ok(
        json!({"forward_s": fwd, "backward_s": bwd, "optimizer_s": opt,
        "scan_forward_s_all_layers": sf * layers, "scan_backward_s_all_layers": sb * layers}),
    )
}

/// Entry point of `bench-train`.
pub fn run(a: &BenchTrainArgs) -> Result<()> {
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
    let mut results = Vec::new();
    for v in &a.variants {
        let (backend, scan) = parse_variant(v)?;
        let model = SsmMoe::from_weights(&model_cfg, &weights, &backend.autodiff_device(), scan)?;
        let warm = TrainConfig {
            steps: 1,
            eval_every: 0,
            eval_chunks: 1,
            ..b.train.clone()
        };
        let (model, _) = train(model, &stream, &stream, 1, &warm, None, |_| {})?;
        let timed = TrainConfig {
            steps: a.steps,
            eval_every: 0,
            eval_chunks: 1,
            ..b.train.clone()
        };
        let t0 = std::time::Instant::now();
        let (_, log) = train(model, &stream, &stream, 1, &timed, None, |_| {})?;
        let secs = t0.elapsed().as_secs_f64();
        let tokens = a.steps * b.train.batch_size * b.train.seq_len;
        let tps = tokens as f64 / secs;
        println!(
            "{v:<24} {tps:>9.0} tokens/s  ({:.3} s/step, loss {:.3})",
            secs / a.steps as f64,
            log.last().map_or(f64::NAN, |p| p.loss)
        );
        let mut row = json!({"variant": v, "tokens_per_s": tps, "seconds_per_step": secs / a.steps as f64, "batch": b.train.batch_size, "seq_len": b.train.seq_len});
        if a.breakdown {
            row["breakdown"] = breakdown(
                &model_cfg, &weights, backend, scan, &stream, &b.train, a.steps,
            )?;
        }
        results.push(row);
    }
    println!(
        "{}",
        serde_json::to_string(&json!({"config": a.config, "steps": a.steps, "results": results}))?
    );
    Ok(())
}
