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
    let tokenizer = checkpoint::load_tokenizer(path, &ckpt)
        .with_context(|| format!("reading the tokenizer of checkpoint {}", path.display()))?;
    Ok(Loaded {
        path: path.to_path_buf(),
        ckpt,
        tokenizer,
    })
}

/// Refuses a checkpoint with quantized tensors, naming it: the commands that compress (quantize,
/// prune, mixed) start from F32 weights, and say so before any work.
pub fn require_unquantized(loaded: &Loaded) -> Result<()> {
    let quantized: Vec<&str> = loaded
        .ckpt
        .weights
        .iter()
        .filter(|(_, t)| t.is_quantized())
        .map(|(n, _)| n.as_str())
        .collect();
    if let Some(first) = quantized.first() {
        bail!(
            "checkpoint {} is quantized ({} tensors, e.g. {first}); this command needs an F32 checkpoint",
            loaded.path.display(),
            quantized.len()
        );
    }
    Ok(())
}

/// Creates the directory of the output `out` before any work, so a bad `--out` fails first.
pub fn prepare_out(out: &Path) -> Result<()> {
    match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory of --out {}", out.display())),
        None => Ok(()),
    }
}

/// Writes `ckpt` to `out` with the tokenizer of `from` copied beside it (content-named
/// `tokenizer-<sha8>.bin`, see [`checkpoint::write_tokenizer`]; the checkpoint names it); `check`
/// sees the checkpoint exactly as it is written (e.g. a byte budget).
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
    let tsrc = checkpoint::tokenizer_path(&from.path, tref)?;
    ckpt.tokenizer = Some(place_tokenizer(&tsrc, out)?);
    check(&ckpt)?;
    checkpoint::save(&ckpt, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(ckpt)
}

/// Copies the tokenizer file `src` beside `out_ckpt` under its content name and returns its
/// reference.
pub fn place_tokenizer(src: &Path, out_ckpt: &Path) -> Result<TokenizerRef> {
    let bytes = fsutil::read(src)?;
    Ok(checkpoint::write_tokenizer(&bytes, "llama2c", out_ckpt)?)
}

/// The files a checkpoint-writing stage leaves: the checkpoint and the tokenizer it names.
pub fn checkpoint_files(ckpt: &Path) -> Result<Vec<PathBuf>> {
    let mut v = vec![ckpt.to_path_buf()];
    v.extend(checkpoint::tokenizer_file_of(ckpt)?);
    Ok(v)
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

/// clap value parser: an integer ≥ 1 (counts, sizes, repetitions).
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(v) => Ok(v),
        Err(e) => Err(e.to_string()),
    }
}

/// clap value parser: a finite number ≥ 0.
pub fn non_negative(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number >= 0")),
        Err(e) => Err(e.to_string()),
    }
}

/// clap value parser: a number in [0, 1].
pub fn unit_interval(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not in [0, 1]")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_parsers_refuse_out_of_range_numbers() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err() && at_least_one("-1").is_err());
        assert_eq!(non_negative("0"), Ok(0.0));
        for bad in ["NaN", "inf", "-1", "x"] {
            assert!(non_negative(bad).is_err(), "{bad}");
        }
        assert_eq!(unit_interval("0.9"), Ok(0.9));
        for bad in ["NaN", "2", "-0.1"] {
            assert!(unit_interval(bad).is_err(), "{bad}");
        }
    }
}
