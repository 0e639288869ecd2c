//! Pipeline stage `import`: a llama2.c checkpoint and tokenizer as a squish checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use super::summary::{file_hash, own_summary};
use crate::report::write_report;

/// Runs `import`; returns the files it wrote.
pub fn import(
    ctx: &Ctx,
    c: &super::config::ImportStage,
    fingerprint: &str,
) -> Result<Vec<PathBuf>> {
    let out = ctx.checkpoint_path("import");
    let ckpt = crate::cmd_import::import(&c.model, &c.tokenizer, &out, "import")?;
    let bytes = std::fs::metadata(&out)?.len();
    let params = ckpt.weights.param_count();
    let json = json!({
        "stage": "import",
        "command": format!("cargo xtask import-llama2c --model {} --tokenizer {} --out {}", c.model.display(), c.tokenizer.display(), out.display()),
        "inputs": {"model": {"path": c.model, "sha256": file_hash(&c.model)?}, "tokenizer": {"path": c.tokenizer, "sha256": file_hash(&c.tokenizer)?}},
        "fingerprint": fingerprint,
        "output": {"path": out, "sha256": file_hash(&out)?, "bytes": bytes},
        "parameters": params,
        "config": ckpt.config,
        "summary": own_summary(ctx, "import", 0.0)?,
    });
    let md = format!(
        "# Stage `import`\n\nImported `{}` (llama2.c v0) with tokenizer `{}`.\n\n| what | value |\n|---|---|\n| parameters | {params} |\n| file bytes | {bytes} |\n| output | `{}` |\n| sha256 | `{}` |\n\nCommand: `{}`\n",
        c.model.display(),
        c.tokenizer.display(),
        out.display(),
        json["output"]["sha256"].as_str().unwrap_or(""),
        json["command"].as_str().unwrap_or("")
    );
    let (rj, rm) = write_report(ctx, "import", &json, &md)?;
    let mut files = crate::common::checkpoint_files(&out)?;
    files.extend([rj, rm]);
    Ok(files)
}
