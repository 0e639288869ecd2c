//! The stage runner behind `cargo xtask pipeline`.
//!
//! Each stage has a *fingerprint*: the sha256 of its name, its settings (as JSON), the sha256 of
//! every input file (the parent stage's checkpoint, source files) and the hashes of the code it
//! runs (the workspace crates and xtask files of [`code`], embedded at build time). After a stage
//! succeeds its outputs are written atomically and then a stamp
//! `<checkpoint_dir>/<stage>/stage.json` records the fingerprint, the code hashes and the
//! outputs' hashes. A rerun skips a stage whose stamp matches and whose outputs are intact, and
//! says why (e.g. "code changed: squish-quant"); anything else reruns it.

mod baseline;
pub mod code;
// Shared with build.rs; some items are used only there or by the tests.
#[cfg_attr(not(test), allow(dead_code))]
mod code_hash;
#[cfg(test)]
mod code_hash_tests;
pub mod config;
mod eval;
mod import;
mod plan;
mod stages;
mod summary;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use squish_core::fsutil;

pub use config::PipelineConfig;
pub use plan::{PlannedStage, plan};

/// Arguments of `pipeline`.
#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Pipeline configuration.
    #[arg(long, default_value = "configs/phase7.toml")]
    pub config: PathBuf,
    /// Rerun stages even when up to date.
    #[arg(long)]
    pub force: bool,
    /// Run only this stage (its inputs must exist).
    #[arg(long)]
    pub only: Option<String>,
    /// Run from this stage on (forcing it and the ones after it).
    #[arg(long)]
    pub from: Option<String>,
    /// Print the plan and which stages are up to date; run nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What a finished stage leaves behind, recorded in its stamp.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stamp {
    /// The stage's name.
    pub stage: String,
    /// Fingerprint of its inputs and settings.
    pub fingerprint: String,
    /// Output path → sha256.
    pub outputs: BTreeMap<String, String>,
    /// Fingerprint of its inputs and settings without the code (absent in stamps written before
    /// code hashes existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_fingerprint: Option<String>,
    /// The code it ran: unit → hash (see [`code`]; empty in older stamps).
    #[serde(default)]
    pub code: BTreeMap<String, String>,
}

/// A stage's fingerprint and the parts that tell a code change from an input change.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// sha256 of the stage name, its inputs and settings, and its code hashes: what the stamp
    /// must match.
    pub full: String,
    /// sha256 of the stage name, its inputs and settings only.
    pub inputs: String,
    /// The code the stage runs: unit (`squish-quant`, `xtask/src/stage_quant.rs`) → hash.
    pub code: BTreeMap<String, String>,
}

/// Shared state of a pipeline run.
pub struct Ctx<'a> {
    /// The configuration.
    pub cfg: &'a PipelineConfig,
    /// The config file (for reports).
    pub config_path: &'a Path,
}

impl Ctx<'_> {
    /// The checkpoint a stage writes.
    pub fn checkpoint_path(&self, stage: &str) -> PathBuf {
        self.cfg
            .run
            .checkpoint_dir
            .join(stage)
            .join("model.safetensors")
    }
    /// The report files of a stage: (json, md).
    pub fn report_paths(&self, stage: &str) -> (PathBuf, PathBuf) {
        let base = format!("{}_{stage}", self.cfg.run.name);
        (
            self.cfg.run.report_dir.join(format!("{base}.json")),
            self.cfg.run.report_dir.join(format!("{base}.md")),
        )
    }
    fn stamp_path(&self, stage: &str) -> PathBuf {
        self.cfg.run.checkpoint_dir.join(stage).join("stage.json")
    }
}

/// Why a stage will or will not run.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Stamp matches, outputs intact.
    UpToDate,
    /// Needs to run, with the reason.
    Stale(String),
}

fn status(ctx: &Ctx, stage: &str, fp: &Fingerprint) -> Status {
    let path = ctx.stamp_path(stage);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Status::Stale("never run (no stamp)".into());
    };
    let Ok(stamp) = serde_json::from_str::<Stamp>(&text) else {
        return Status::Stale(format!("stamp {} unreadable", path.display()));
    };
    if stamp.fingerprint != fp.full {
        return Status::Stale(stale_reason(&stamp, fp));
    }
    for (out, sha) in &stamp.outputs {
        match fsutil::sha256_file(Path::new(out)) {
            Ok(s) if &s == sha => {}
            Ok(_) => return Status::Stale(format!("output {out} was modified")),
            Err(_) => return Status::Stale(format!("output {out} is missing")),
        }
    }
    Status::UpToDate
}

/// Why a stamp's fingerprint differs from `fp`: the code units that changed, and/or the inputs.
fn stale_reason(stamp: &Stamp, fp: &Fingerprint) -> String {
    let Some(old_inputs) = &stamp.inputs_fingerprint else {
        return "inputs, settings or code changed (stamp without code hashes)".into();
    };
    let units: std::collections::BTreeSet<&str> = fp
        .code
        .keys()
        .chain(stamp.code.keys())
        .filter(|k| fp.code.get(*k) != stamp.code.get(*k))
        .map(String::as_str)
        .collect();
    let code = format!(
        "code changed: {}",
        units.iter().copied().collect::<Vec<_>>().join(", ")
    );
    match (old_inputs == &fp.inputs, units.is_empty()) {
        (true, false) => code,
        (false, false) => format!("inputs or settings changed; {code}"),
        _ => "inputs or settings changed".into(),
    }
}

fn write_stamp(ctx: &Ctx, stage: &str, fp: &Fingerprint, outputs: &[PathBuf]) -> Result<()> {
    let mut map = BTreeMap::new();
    for o in outputs {
        map.insert(o.display().to_string(), fsutil::sha256_file(o)?);
    }
    let stamp = Stamp {
        stage: stage.into(),
        fingerprint: fp.full.clone(),
        outputs: map,
        inputs_fingerprint: Some(fp.inputs.clone()),
        code: fp.code.clone(),
    };
    fsutil::atomic_write(
        &ctx.stamp_path(stage),
        serde_json::to_string_pretty(&stamp)?.as_bytes(),
    )?;
    Ok(())
}

/// Entry point of `pipeline`.
pub fn run(a: &PipelineArgs) -> Result<()> {
    let cfg = PipelineConfig::load(&a.config)?;
    let ctx = Ctx {
        cfg: &cfg,
        config_path: &a.config,
    };
    let selected = plan(&cfg.order, a.only.as_deref(), a.from.as_deref(), a.force)?;
    let overall = crate::common::progress_bar(selected.len() as u64, "pipeline");
    if a.dry_run {
        overall.finish_and_clear();
    }
    println!(
        "pipeline {} ({}): {}",
        cfg.run.name,
        a.config.display(),
        cfg.order.join(" → ")
    );
    for PlannedStage {
        name: stage,
        forced,
    } in selected
    {
        let fp = stages::fingerprint(&ctx, stage, code::embedded())
            .with_context(|| format!("fingerprinting stage `{stage}`"))?;
        let fingerprint = fp.full.as_str();
        let st = status(&ctx, stage, &fp);
        match (&st, forced) {
            (Status::UpToDate, false) => {
                println!(
                    "  [{stage}] up to date — skipped (inputs and code unchanged, fingerprint {})",
                    &fingerprint[..12]
                );
                tracing::info!(stage, fingerprint, "up to date, skipped");
            }
            _ => {
                let why = match (&st, forced) {
                    (_, true) => "forced".to_string(),
                    (Status::Stale(r), _) => r.clone(),
                    (Status::UpToDate, _) => unreachable!("handled above"),
                };
                if a.dry_run {
                    println!("  [{stage}] would run: {why}");
                } else {
                    println!("  [{stage}] running: {why}");
                    tracing::info!(stage, fingerprint, reason = why.as_str(), "stage started");
                    let t0 = std::time::Instant::now();
                    let outputs = stages::run_stage(&ctx, stage, fingerprint)
                        .with_context(|| format!("stage `{stage}` failed"))?;
                    write_stamp(&ctx, stage, &fp, &outputs)?;
                    tracing::info!(
                        stage,
                        seconds = t0.elapsed().as_secs_f64(),
                        outputs = outputs.len(),
                        "stage done"
                    );
                    println!(
                        "  [{stage}] done in {:.1} s → {}",
                        t0.elapsed().as_secs_f64(),
                        outputs
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
        if !a.dry_run {
            overall.inc(1);
        }
    }
    overall.finish_and_clear();
    Ok(())
}
