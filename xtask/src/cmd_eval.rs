//! `cargo xtask eval`: perplexity of a checkpoint on a text file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use squish_core::data::{EvalMode, EvalText};
use squish_core::eval::{PerplexityReport, Protocol, perplexity};
use squish_core::model::CpuBackend;
use squish_core::tokenizer::Tokenizer;
use squish_kernels::Activations;
use squish_kernels::runtime::{Runtime, RuntimeOptions};
use squish_kernels::speed::parse_activations;

use crate::cmd_bench::Engine;
use crate::common::{burn_model, load_checkpoint, progress_bar};

/// Arguments of `eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Checkpoint (.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to score: its stories (split at `<|endoftext|>` lines, or a JSON file's texts)
    /// joined by blank lines, tokenized with one BOS — see --raw.
    #[arg(long)]
    pub data: PathBuf,
    /// Score the file as it is, `<|endoftext|>` lines included (the pre-stories protocol).
    #[arg(long)]
    pub raw: bool,
    /// Also write the scored text to this file (what `llama-perplexity -f` should read to give
    /// the same number).
    #[arg(long)]
    pub write_text: Option<PathBuf>,
    /// Context length.
    #[arg(long, default_value_t = 256, value_parser = crate::common::at_least_one)]
    pub ctx: usize,
    /// Perplexity protocol.
    #[arg(long, default_value = "llama-cpp")]
    pub protocol: String,
    /// Chunks per forward batch.
    #[arg(long, default_value_t = 8, value_parser = crate::common::at_least_one)]
    pub batch: usize,
    /// burn CPU backend (flex or ndarray).
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Inference engine: the native runtime (default) or the burn reference.
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    pub engine: Engine,
    /// Activation precision of the native runtime for quantized weights: f32 (exact, default)
    /// or int8 (the integer kernels: int8 activations per group, codebook levels as int8).
    #[arg(long, default_value = "f32")]
    pub act: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs perplexity for a checkpoint on an evaluation text with `engine`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    checkpoint: &Path,
    text: &EvalText,
    ctx: usize,
    protocol: &str,
    batch: usize,
    backend: &str,
    engine: Engine,
    act: Activations,
    show_progress: bool,
) -> Result<PerplexityReport> {
    let _protocol = Protocol::parse(protocol)?;
    let loaded = load_checkpoint(checkpoint)?;
    let tokens = text.tokens(&loaded.tokenizer);
    let backend = CpuBackend::parse(backend)?;
    let mut burn;
    let mut native;
    let model: &mut dyn squish_core::eval::LogitsModel = match engine {
        Engine::Burn if act != Activations::F32 => {
            anyhow::bail!("--act int8 needs the native engine (burn runs float activations)")
        }
        Engine::Burn => {
            burn = burn_model(&loaded.ckpt, backend)?;
            burn.as_logits_model()
        }
        Engine::Native => {
            let opts = RuntimeOptions {
                act,
                ..RuntimeOptions::default()
            };
            native = Runtime::load_with(&loaded.ckpt, opts)?;
            &mut native
        }
    };
    let pb = show_progress.then(|| progress_bar(0, "eval"));
    let report = perplexity(
        model,
        &tokens,
        ctx,
        loaded.tokenizer.bos_id(),
        batch,
        |done, total| {
            if let Some(pb) = &pb {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            }
        },
    )?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    tracing::info!(
        ppl = report.ppl,
        nats = report.nats_per_token,
        tokens = report.tokens,
        "perplexity of {}",
        checkpoint.display()
    );
    Ok(report)
}

/// What `eval --json` prints: the perplexity and the text it was measured on.
#[derive(serde::Serialize)]
struct EvalOutput<'a> {
    #[serde(flatten)]
    report: &'a PerplexityReport,
    eval_text: &'a EvalText,
}

/// Entry point of `eval`.
pub fn run(a: &EvalArgs) -> Result<()> {
    let mode = if a.raw {
        EvalMode::Raw
    } else {
        EvalMode::Stories
    };
    // The checkpoint is the first thing a user gets wrong; name it before reading the text.
    if !a.checkpoint.is_file() {
        anyhow::bail!("checkpoint {} is not a file", a.checkpoint.display());
    }
    let text = EvalText::load(&a.data, mode, None).context("reading evaluation text")?;
    if let Some(p) = &a.write_text {
        text.write(p)
            .with_context(|| format!("writing the evaluation text {}", p.display()))?;
    }
    let act = parse_activations(&a.act).context("--act")?;
    let r = evaluate_with(
        &a.checkpoint,
        &text,
        a.ctx,
        &a.protocol,
        a.batch,
        &a.backend,
        a.engine,
        act,
        !a.json,
    )?;
    if a.json {
        let out = EvalOutput {
            report: &r,
            eval_text: &text,
        };
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "PPL {:.4}  ({:.5} nats/token over {} scored tokens, {} chunks of {}, protocol {})\ntext: {}",
            r.ppl,
            r.nats_per_token,
            r.tokens,
            r.chunks,
            r.ctx,
            r.protocol,
            text.describe()
        );
    }
    Ok(())
}
