//! `cargo xtask eval`: perplexity of a checkpoint on a text file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use squish_core::eval::{PerplexityReport, Protocol, perplexity};
use squish_core::model::CpuBackend;
use squish_core::tokenizer::Tokenizer;

use crate::cmd_bench::Engine;
use crate::common::{burn_model, load_checkpoint, progress_bar};

/// Arguments of `eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Checkpoint (.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text file to score (read whole, tokenized with BOS).
    #[arg(long)]
    pub data: PathBuf,
    /// Context length.
    #[arg(long, default_value_t = 256)]
    pub ctx: usize,
    /// Perplexity protocol.
    #[arg(long, default_value = "llama-cpp")]
    pub protocol: String,
    /// Chunks per forward batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// burn CPU backend (flex or ndarray).
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Inference engine: the native runtime (default) or the burn reference.
    #[arg(long, value_enum, default_value_t = Engine::Native)]
    pub engine: Engine,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs perplexity for a checkpoint on a text file with the burn reference engine.
pub fn evaluate(
    checkpoint: &Path,
    data: &Path,
    ctx: usize,
    protocol: &str,
    batch: usize,
    backend: &str,
    show_progress: bool,
) -> Result<PerplexityReport> {
    evaluate_with(
        checkpoint,
        data,
        ctx,
        protocol,
        batch,
        backend,
        Engine::Burn,
        show_progress,
    )
}

/// Runs perplexity for a checkpoint on a text file with `engine`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    checkpoint: &Path,
    data: &Path,
    ctx: usize,
    protocol: &str,
    batch: usize,
    backend: &str,
    engine: Engine,
    show_progress: bool,
) -> Result<PerplexityReport> {
    let _protocol = Protocol::parse(protocol)?;
    let loaded = load_checkpoint(checkpoint)?;
    let mut text = squish_core::data::read_text(data).with_context(|| "reading evaluation text")?;
    // llama.cpp's `-f` strips one trailing newline from the file (common/arg.cpp); so do we.
    if text.ends_with('\n') {
        text.pop();
    }
    let tokens = loaded.tokenizer.encode(&text, true, false);
    let backend = CpuBackend::parse(backend)?;
    let mut burn;
    let mut native;
    let model: &mut dyn squish_core::eval::LogitsModel = match engine {
        Engine::Burn => {
            burn = burn_model(&loaded.ckpt, backend)?;
            burn.as_logits_model()
        }
        Engine::Native => {
            native = squish_kernels::runtime::Runtime::load(&loaded.ckpt)?;
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

/// Entry point of `eval`.
pub fn run(a: &EvalArgs) -> Result<()> {
    let r = evaluate_with(
        &a.checkpoint,
        &a.data,
        a.ctx,
        &a.protocol,
        a.batch,
        &a.backend,
        a.engine,
        !a.json,
    )?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "PPL {:.4}  ({:.5} nats/token over {} scored tokens, {} chunks of {}, protocol {})",
            r.ppl, r.nats_per_token, r.tokens, r.chunks, r.ctx, r.protocol
        );
    }
    Ok(())
}
