//! Writing stage reports (`<report_dir>/<run>_<stage>.{json,md}`), atomically.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::Value;
use squish_core::fsutil::atomic_write;

use crate::pipeline::Ctx;

/// Writes a stage's JSON and Markdown report; returns their paths.
pub fn write_report(ctx: &Ctx, stage: &str, json: &Value, md: &str) -> Result<(PathBuf, PathBuf)> {
    let (pj, pm) = ctx.report_paths(stage);
    let mut json = json.clone();
    if let Value::Object(m) = &mut json {
        m.insert(
            "config_file".into(),
            Value::String(ctx.config_path.display().to_string()),
        );
    }
    atomic_write(&pj, serde_json::to_string_pretty(&json)?.as_bytes())?;
    atomic_write(&pm, md.as_bytes())?;
    Ok((pj, pm))
}
