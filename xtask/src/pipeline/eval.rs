//! Pipeline stage `eval`: perplexity of another stage's checkpoint (burn).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::json;
use squish_core::data::{EvalMode, EvalText};
use squish_core::fsutil;

use super::Ctx;
use crate::cmd_bench::Engine;
use crate::report::write_report;

/// Runs `eval`; returns the files it wrote.
pub fn eval(ctx: &Ctx, c: &super::config::EvalStage, fingerprint: &str) -> Result<Vec<PathBuf>> {
    let input = ctx.checkpoint_path(&c.input);
    if !input.is_file() {
        bail!(
            "the checkpoint of stage `{}` ({}) does not exist; run that stage first",
            c.input,
            input.display()
        );
    }
    let text = EvalText::load(&c.data, EvalMode::Stories, None)
        .with_context(|| format!("reading the evaluation text {}", c.data.display()))?;
    let r = crate::cmd_eval::evaluate_with(
        &input,
        &text,
        c.ctx,
        &c.protocol,
        c.batch,
        &c.backend,
        Engine::Burn,
        squish_kernels::Activations::F32,
        true,
    )?;
    let command = format!(
        "cargo xtask eval --checkpoint {} --data {} --ctx {} --protocol {} --json",
        input.display(),
        c.data.display(),
        c.ctx,
        c.protocol
    );
    let json = json!({
        "stage": "eval",
        "command": command,
        "inputs": {"checkpoint": {"path": input, "sha256": file_hash(&input)?}, "data": {"path": c.data, "sha256": file_hash(&c.data)?}},
        "fingerprint": fingerprint,
        "engine": format!("burn ({})", c.backend),
        "perplexity": r,
        "eval_text": text,
    });
    let md = format!(
        "# Stage `eval`\n\n| metric | value |\n|---|---|\n| PPL | {:.4} |\n| nats/token | {:.5} |\n| scored tokens | {} |\n| chunks × ctx | {} × {} |\n| protocol | {} |\n| evaluation text | {} |\n\nCheckpoint `{}` on `{}`.\n\nCommand: `{command}`\n",
        r.ppl,
        r.nats_per_token,
        r.tokens,
        r.chunks,
        r.ctx,
        r.protocol,
        text.describe(),
        input.display(),
        c.data.display()
    );
    println!(
        "  [eval] PPL {:.4} ({:.5} nats/token, {} tokens)",
        r.ppl, r.nats_per_token, r.tokens
    );
    let (rj, rm) = write_report(ctx, "eval", &json, &md)?;
    Ok(vec![rj, rm])
}

fn file_hash(p: &std::path::Path) -> Result<String> {
    fsutil::sha256_file(p).with_context(|| format!("hashing input {}", p.display()))
}
