//! `cargo xtask import-llama2c`: a llama2.c v0 checkpoint + tokenizer.bin → squish checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use squish_core::checkpoint::{self, Checkpoint, Provenance};
use squish_core::config::ModelConfig;
use squish_core::tokenizer::Llama2cTokenizer;
use squish_core::{fsutil, llama2c};

use crate::common::place_tokenizer;

/// Arguments of `import-llama2c`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// llama2.c checkpoint (legacy v0 format).
    #[arg(long)]
    pub model: PathBuf,
    /// llama2.c tokenizer.bin.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Output .safetensors path (its tokenizer is written beside it as `tokenizer-<sha8>.bin`).
    #[arg(long)]
    pub out: PathBuf,
}

/// Imports `model` + `tokenizer` and writes the checkpoint to `out`; returns it.
pub fn import(model: &Path, tokenizer: &Path, out: &Path, stage: &str) -> Result<Checkpoint> {
    let (cfg, weights) =
        llama2c::import(model).with_context(|| format!("importing {}", model.display()))?;
    // Validate the tokenizer against the model's vocabulary before writing anything.
    Llama2cTokenizer::from_file(tokenizer, cfg.vocab_size)?;
    crate::common::prepare_out(out)?;
    let tref = place_tokenizer(tokenizer, out)?;
    let params = weights.param_count() as f64;
    let provenance = Provenance {
        stage: stage.into(),
        parent_sha256: Some(fsutil::sha256_file(model)?),
        config_hash: None,
        tool: format!("squish {}", env!("CARGO_PKG_VERSION")),
        details: BTreeMap::from([("source".into(), "llama2c-v0".into())]),
    };
    let ckpt = Checkpoint {
        config: ModelConfig::Llama(cfg),
        weights,
        provenance,
        metrics: BTreeMap::from([("parameters".into(), params)]),
        tokenizer: Some(tref),
    };
    checkpoint::save(&ckpt, out)?;
    tracing::info!(params, "wrote {}", out.display());
    Ok(ckpt)
}

/// Entry point of `import-llama2c`.
pub fn run(a: &ImportArgs) -> Result<()> {
    let ckpt = import(&a.model, &a.tokenizer, &a.out, "import")?;
    let bytes = std::fs::metadata(&a.out)?.len();
    println!(
        "wrote {} ({} parameters, {} bytes)",
        a.out.display(),
        ckpt.weights.param_count(),
        bytes
    );
    Ok(())
}
