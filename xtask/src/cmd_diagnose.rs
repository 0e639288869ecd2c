//! `cargo xtask diagnose`: what this CPU can do, measured (squish-hwdiag), and the pipeline
//! stage `diagnostics` that writes `reports/<run>_hardware_check.{json,md}`.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};
use squish_hwdiag::{HardwareReport, ProbeOptions, SimdLevel, probe_with};

/// Arguments of `diagnose`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiagnoseArgs {
    /// Print the report as JSON (schema: crates/hw-diagnostics/README.md).
    #[arg(long)]
    pub json: bool,
    /// Shorter benchmarks (~1 s in all).
    #[arg(long)]
    pub quick: bool,
    /// Cap the SIMD path (scalar, avx2, avx512, avx512vnni, neon); also `SQUISH_SIMD`.
    #[arg(long)]
    pub simd: Option<String>,
}

/// `[stages.diagnostics]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsStage {
    /// Shorter benchmarks.
    #[serde(default)]
    pub quick: bool,
}

fn options(quick: bool, simd: Option<&str>) -> Result<ProbeOptions> {
    let force = simd
        .map(|s| SimdLevel::parse(s).ok_or_else(|| anyhow!("unknown SIMD level `{s}`")))
        .transpose()?;
    Ok(ProbeOptions {
        quick,
        force,
        features: vec!["burn-flex".into(), "burn-ndarray".into()],
        ..ProbeOptions::default()
    })
}

/// Entry point of `diagnose`.
pub fn run(a: &DiagnoseArgs) -> Result<()> {
    let report = probe_with(&options(a.quick, a.simd.as_deref())?);
    if a.json {
        println!("{}", report.to_json()?);
    } else {
        println!("{}", report.to_markdown());
    }
    Ok(())
}

/// Runs the stage: probes and writes `<report_dir>/<run>_hardware_check.{json,md}`.
pub fn stage(
    cfg: &DiagnosticsStage,
    report_dir: &Path,
    run_name: &str,
) -> Result<(HardwareReport, Vec<PathBuf>)> {
    let report = probe_with(&options(cfg.quick, None)?);
    let (j, m) = (
        report_dir.join(format!("{run_name}_hardware_check.json")),
        report_dir.join(format!("{run_name}_hardware_check.md")),
    );
    squish_core::fsutil::atomic_write(&j, report.to_json()?.as_bytes())?;
    squish_core::fsutil::atomic_write(&m, report.to_markdown().as_bytes())?;
    Ok((report, vec![j, m]))
}
