//! Pipeline stage `baseline`: train the SsmMoe model and its tokenizer from text.

use std::path::PathBuf;

use anyhow::Result;

use super::Ctx;
use super::summary::own_summary;
use crate::report::write_report;

/// Runs `baseline`; returns the files it wrote.
pub fn baseline(
    ctx: &Ctx,
    c: &squish_core::baseline::BaselineStage,
    fingerprint: &str,
) -> Result<Vec<PathBuf>> {
    let out = ctx.checkpoint_path("baseline");
    let r = crate::stage_baseline::run(c, &out, fingerprint)?;
    println!(
        "  [baseline] {} parameters, PPL {:.4} ({:.4} nats/token; unigram {:.4}), trained in {:.0} s",
        r.parameters, r.ppl.ppl, r.ppl.nats_per_token, r.unigram_nats, r.train_seconds
    );
    let (mut json, md) = crate::stage_baseline::report(&r, c, fingerprint)?;
    json["summary"] = serde_json::to_value(own_summary(ctx, "baseline", r.train_seconds)?)?;
    let (rj, rm) = write_report(ctx, "baseline", &json, &md)?;
    let mut files = crate::common::checkpoint_files(&out)?;
    files.extend([rj, rm]);
    Ok(files)
}
