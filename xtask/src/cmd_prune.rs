//! `cargo xtask prune`: structured pruning of a checkpoint by squish-prune's stage
//! ([`squish_prune::run`], as the pipeline's `pruned`): the flags map onto [`PruneConfig`];
//! recovery by distillation; measured by the native runtime.

use std::path::PathBuf;

use anyhow::{Result, bail};
use squish_core::train::TrainConfig;
use squish_prune::{Allocation, GroupKind, Importance, PruneConfig, default_targets};

use crate::stage_data::{DataConfig, load_input_from, save_and_measure};
use crate::stage_prune::prune_input;

/// Arguments of `prune`.
#[derive(clap::Args, Debug, Clone)]
pub struct PruneArgs {
    /// F32 checkpoint to prune.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output checkpoint (tokenizer copied beside it).
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction of the non-embedding parameters to remove.
    #[arg(long, default_value_t = 0.4)]
    pub ratio: f32,
    /// Importance: magnitude (= magnitude_l2), magnitude_l1, magnitude_l2, wanda, taylor,
    /// activation (mean |x| of the inputs a unit feeds, Minitron-style).
    #[arg(long, default_value = "wanda")]
    pub importance: String,
    /// Group kinds, comma-separated: moe_channels, experts, ssm_channels, ffn_channels, heads,
    /// d_model (residual width, both families). Default: moe_channels,experts (SsmMoe) or
    /// ffn_channels,heads (Llama).
    #[arg(long)]
    pub targets: Option<String>,
    /// Allow pruning SSM channels (sets preserve_ssm = false).
    #[arg(long)]
    pub allow_ssm: bool,
    /// global or uniform.
    #[arg(long, default_value = "global")]
    pub allocation: String,
    /// Pruning rounds (each followed by recovery).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Minimum kept channels per dimension.
    #[arg(long, default_value_t = 8)]
    pub min_width: usize,
    /// Round kept widths to a multiple of this (0 = off).
    #[arg(long, default_value_t = 0)]
    pub round_to: usize,
    /// Recovery budget per round in training tokens (0 = no recovery).
    #[arg(long, default_value_t = 0)]
    pub recover_tokens: usize,
    /// Recovery batch size (windows per step).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Recovery window length in tokens.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Width pruning: keep the RMSNorm gains and ε as they are instead of rescaling them to
    /// what they computed with the removed channels present and zero.
    #[arg(long)]
    pub no_rescale_norms: bool,
    /// Depth pruning: first remove this many whole blocks, those whose removal moves the output
    /// least (KL on the calibration windows); `--ratio` counts them and channels remove the rest.
    #[arg(long, default_value_t = 0)]
    pub remove_blocks: usize,
    /// Recovery peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Weight of the distillation KL in the recovery loss.
    #[arg(long, default_value_t = 0.5)]
    pub distill_alpha: f32,
    /// Directory with train.txt/valid.txt (else $SQUISH_DATA, else ../shared/data/tinystories).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

fn parse_importance(s: &str) -> Result<Importance> {
    Ok(match s {
        "magnitude" | "magnitude_l2" | "l2" => Importance::MagnitudeL2,
        "magnitude_l1" | "l1" => Importance::MagnitudeL1,
        "wanda" => Importance::Wanda,
        "taylor" => Importance::Taylor,
        "activation" => Importance::Activation,
        other => bail!(
            "--importance {other}: expected magnitude, magnitude_l1, wanda, taylor or activation"
        ),
    })
}

fn parse_targets(s: &str) -> Result<Vec<GroupKind>> {
    s.split(',')
        .map(|t| {
            serde_json::from_value(serde_json::Value::String(t.trim().to_string())).map_err(|_| {
                anyhow::anyhow!(
                    "--targets: unknown group kind `{t}` (moe_channels, experts, ssm_channels, ffn_channels, heads, d_model)"
                )
            })
        })
        .collect()
}

/// Entry point of `prune`.
pub fn run(a: &PruneArgs) -> Result<()> {
    let (report, m) = prune_once(a)?;
    println!(
        "wrote {} ({} bytes): {} → {} parameters ({:.1} % of non-embedding removed, requested {:.1} %); PPL {:.4} (llama-cpp, ctx {}, native runtime)",
        a.out.display(),
        m.file_bytes,
        report.params_before,
        report.params_after,
        100.0 * report.achieved_ratio,
        100.0 * report.requested_ratio,
        m.ppl.ppl,
        m.ppl.ctx
    );
    Ok(())
}

/// One pruning run as `prune` does it (written to `a.out`, its JSON report to `a.report` when
/// given): the stage's report and the native measurement.
pub fn prune_once(
    a: &PruneArgs,
) -> Result<(
    squish_prune::PruneReport,
    squish_kernels::measure::Measurement,
)> {
    let d = DataConfig {
        data_dir: a.data_dir.clone(),
        ..DataConfig::default()
    };
    let fallback = a
        .out
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("corpus");
    crate::common::prepare_out(&a.out)?;
    let input = load_input_from(&a.checkpoint, &d, &fallback)?;
    crate::common::require_unquantized(&input.loaded)?;
    let targets = match &a.targets {
        Some(t) => parse_targets(t)?,
        None => default_targets(&input.loaded.ckpt.config),
    };
    let (batch, seq) = (a.batch_size, a.seq_len);
    if batch == 0 || seq < 2 {
        bail!("--batch-size must be ≥ 1 and --seq-len ≥ 2 (got {batch}, {seq})");
    }
    let steps = a.recover_tokens / (batch * seq);
    let recover = (steps > 0).then(|| TrainConfig {
        steps,
        batch_size: batch,
        seq_len: seq,
        lr: a.lr,
        min_lr: a.lr / 10.0,
        warmup_steps: (steps / 10).min(20),
        weight_decay: 0.0,
        grad_clip: 1.0,
        balance_coef: 0.01,
        distill_alpha: a.distill_alpha,
        distill_temperature: 1.0,
        eval_every: 0,
        eval_chunks: 8,
        seed: a.seed,
        adam_epsilon: squish_core::train::DEFAULT_ADAM_EPSILON,
        micro_batches: squish_core::train::DEFAULT_MICRO_BATCHES,
    });
    let cfg = PruneConfig {
        ratio: a.ratio,
        importance: parse_importance(&a.importance)?,
        targets,
        preserve_ssm: !a.allow_ssm,
        allocation: match a.allocation.as_str() {
            "global" => Allocation::Global,
            "uniform" => Allocation::Uniform,
            other => bail!("--allocation {other}: expected global or uniform"),
        },
        min_width: a.min_width,
        round_to: a.round_to,
        rounds: a.rounds,
        rescale_norms: !a.no_rescale_norms,
        remove_blocks: a.remove_blocks,
        recover,
        seed: a.seed,
        ..PruneConfig::default()
    };
    let pb = crate::common::progress_bar((steps * a.rounds) as u64, "prune");
    let mut done = 0;
    let out = squish_prune::run(&prune_input(&input), &cfg, &mut |e| {
        if let squish_prune::PruneEvent::Train { .. } = e {
            done += 1;
            pb.set_position(done);
        }
    })?;
    pb.finish_and_clear();
    let (mut pruned, report) = (out.checkpoint, out.report);
    pruned.provenance.parent_sha256 = Some(input.sha256.clone());
    let (_, m) = save_and_measure(&d, &input, pruned, &a.out)?;
    if let Some(p) = &a.report {
        squish_core::fsutil::atomic_write(
            p,
            serde_json::to_string_pretty(&serde_json::json!({"pruning": report, "measured": m}))?
                .as_bytes(),
        )?;
    }
    Ok((report, m))
}
