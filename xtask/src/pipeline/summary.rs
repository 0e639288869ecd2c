//! Helpers of the stages whose code lives in the pipeline module (`import`, `eval`, `baseline`).

use std::path::Path;

use anyhow::{Context, Result};
use squish_core::fsutil;

use super::Ctx;
use crate::stage_data::{StageSummary, load_input, measure, summary};

/// The native-runtime summary block of a stage's own checkpoint (import / baseline).
pub fn own_summary(ctx: &Ctx, stage: &str, seconds: f64) -> Result<StageSummary> {
    let input = load_input(ctx, stage)?;
    let m = measure(
        &ctx.cfg.data,
        &input,
        &input.loaded.ckpt,
        &input.loaded.path,
    )?;
    Ok(summary(&m, &input.eval, Some(m.ppl.ppl), seconds))
}

/// The sha256 of an input file, naming it in the error.
pub fn file_hash(p: &Path) -> Result<String> {
    fsutil::sha256_file(p).with_context(|| format!("hashing input {}", p.display()))
}
