//! Helpers shared by the subcommands: loading a checkpoint with its tokenizer and building the
//! reference (burn) model.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use squish_core::checkpoint::{self, Checkpoint, TokenizerRef};
use squish_core::config::ModelConfig;
use squish_core::eval::LogitsModel;
use squish_core::fsutil;
use squish_core::generate::StepModel;
use squish_core::model::CpuBackend;
use squish_core::model::llama::{Llama, LlamaStepper};
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_step::SsmMoeStepper;
use squish_core::tokenizer::Llama2cTokenizer;

/// A loaded checkpoint plus its tokenizer.
pub struct Loaded {
    pub path: PathBuf,
    pub ckpt: Checkpoint,
    pub tokenizer: Llama2cTokenizer,
}

/// Loads `path` and the tokenizer it names (checking its sha256).
pub fn load_checkpoint(path: &Path) -> Result<Loaded> {
    let ckpt =
        checkpoint::load(path).with_context(|| format!("loading checkpoint {}", path.display()))?;
    let Some(tref) = &ckpt.tokenizer else {
        bail!(
            "checkpoint {} names no tokenizer (metadata squish.tokenizer)",
            path.display()
        );
    };
    let tpath = path.parent().unwrap_or(Path::new(".")).join(&tref.file);
    let sha = fsutil::sha256_file(&tpath)
        .with_context(|| format!("reading the checkpoint's tokenizer {}", tpath.display()))?;
    if sha != tref.sha256 {
        bail!(
            "tokenizer {} has sha256 {sha}, the checkpoint expects {}",
            tpath.display(),
            tref.sha256
        );
    }
    let tokenizer = Llama2cTokenizer::from_file(&tpath, ckpt.config.vocab_size())?;
    Ok(Loaded {
        path: path.to_path_buf(),
        ckpt,
        tokenizer,
    })
}

/// Writes `ckpt` to `out` with the tokenizer of `from` copied beside it as `tokenizer.bin` (the
/// checkpoint names it); `check` sees the checkpoint exactly as it is written (e.g. a byte budget).
pub fn save_with_tokenizer(
    from: &Loaded,
    mut ckpt: Checkpoint,
    out: &Path,
    check: impl FnOnce(&Checkpoint) -> Result<()>,
) -> Result<Checkpoint> {
    let tref = from
        .ckpt
        .tokenizer
        .as_ref()
        .context("input checkpoint names no tokenizer")?;
    let tsrc = from
        .path
        .parent()
        .unwrap_or(Path::new("."))
        .join(&tref.file);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    ckpt.tokenizer = Some(place_tokenizer(&tsrc, out)?);
    check(&ckpt)?;
    checkpoint::save(&ckpt, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(ckpt)
}

/// Copies the tokenizer file `src` beside `out_ckpt` as `tokenizer.bin` and returns its reference.
pub fn place_tokenizer(src: &Path, out_ckpt: &Path) -> Result<TokenizerRef> {
    let bytes = fsutil::read(src)?;
    let dest = out_ckpt
        .parent()
        .unwrap_or(Path::new("."))
        .join("tokenizer.bin");
    fsutil::atomic_write(&dest, &bytes)?;
    Ok(TokenizerRef {
        file: "tokenizer.bin".into(),
        kind: "llama2c".into(),
        sha256: fsutil::sha256_hex(&bytes),
    })
}

/// The reference burn model of a checkpoint.
pub enum BurnModel {
    /// Llama family.
    Llama(Llama),
    /// SsmMoe family.
    SsmMoe(SsmMoe),
}

impl BurnModel {
    /// The model as a perplexity scorer.
    pub fn as_logits_model(&mut self) -> &mut dyn LogitsModel {
        match self {
            BurnModel::Llama(m) => m,
            BurnModel::SsmMoe(m) => m,
        }
    }
    /// A step-by-step decoder over the model.
    pub fn stepper(&self) -> Box<dyn StepModel + '_> {
        match self {
            BurnModel::Llama(m) => Box::new(LlamaStepper::new(m)),
            BurnModel::SsmMoe(m) => Box::new(SsmMoeStepper::new(m)),
        }
    }
}

/// Builds the burn model for `ckpt` on `backend` (quantized tensors are dequantized).
pub fn burn_model(ckpt: &Checkpoint, backend: CpuBackend) -> Result<BurnModel> {
    let device = backend.device();
    match &ckpt.config {
        ModelConfig::Llama(c) => Ok(BurnModel::Llama(Llama::from_weights(
            c,
            &ckpt.weights,
            &device,
        )?)),
        ModelConfig::SsmMoe(c) => Ok(BurnModel::SsmMoe(SsmMoe::from_weights(
            c,
            &ckpt.weights,
            &device,
            ScanMode::Sequential,
        )?)),
    }
}

/// A progress bar with squish's style.
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} {msg} ({elapsed} / ETA {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}
