//! `cargo xtask diagnose`: what this CPU can do, measured (squish-hwdiag), and the pipeline
//! stage `diagnostics` that writes `reports/<run>_hardware_check.{json,md}`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use squish_hwdiag::stage::{self, DiagnosticsSettings, StageInput};
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

fn options(quick: bool, simd: Option<&str>) -> Result<ProbeOptions> {
    let force = simd
        .map(|s| SimdLevel::parse(s).ok_or_else(|| anyhow!("unknown SIMD level `{s}`")))
        .transpose()?;
    Ok(ProbeOptions {
        quick,
        force,
        features: features(),
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

/// The binary's squish feature names, recorded in the report's toolchain section.
pub fn features() -> Vec<String> {
    vec!["burn-flex".into(), "burn-ndarray".into()]
}

/// Runs the stage (squish-hwdiag's [`stage::run`]): probes and writes
/// `<report_dir>/<run>_hardware_check.{json,md}`.
pub fn stage(
    cfg: &DiagnosticsSettings,
    report_dir: &Path,
    run_name: &str,
) -> Result<(HardwareReport, Vec<PathBuf>)> {
    let input = StageInput {
        report_dir,
        run_name,
        features: features(),
    };
    let out = stage::run(&input, cfg)
        .with_context(|| format!("writing the hardware report into {}", report_dir.display()))?;
    Ok((out.report, out.files))
}
