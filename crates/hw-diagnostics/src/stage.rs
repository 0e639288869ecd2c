//! The pipeline's `diagnostics` stage: probe the machine with the `[stages.diagnostics]`
//! settings and write `<report_dir>/<run>_hardware_check.{json,md}` atomically.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::write_reports_named;
use crate::{HardwareReport, ProbeOptions, Result, probe_with};

/// The pipeline's `[stages.diagnostics]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsSettings {
    /// Shorter benchmarks (~0.5–1 s instead of ~2–3 s).
    #[serde(default)]
    pub quick: bool,
}

/// Where the stage writes and what the calling binary records about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StageInput<'a> {
    /// Directory of the reports.
    pub report_dir: &'a Path,
    /// Run name: the reports are `<run>_hardware_check.{json,md}`.
    pub run_name: &'a str,
    /// The calling binary's squish feature names (`toolchain.squish_features`).
    pub features: Vec<String>,
}

/// What the stage produced.
#[derive(Debug, Clone)]
pub struct StageOutput {
    /// The probe's report.
    pub report: HardwareReport,
    /// The JSON and Markdown files written.
    pub files: Vec<PathBuf>,
}

/// Runs the stage: probes (honouring `SQUISH_SIMD`) and writes both reports.
pub fn run(input: &StageInput, settings: &DiagnosticsSettings) -> Result<StageOutput> {
    let report = probe_with(&ProbeOptions {
        quick: settings.quick,
        features: input.features.clone(),
        ..ProbeOptions::default()
    });
    let basename = format!("{}_hardware_check", input.run_name);
    let (json, md) = write_reports_named(&report, input.report_dir, &basename)?;
    Ok(StageOutput {
        report,
        files: vec![json, md],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_refuse_unknown_keys() {
        let s: DiagnosticsSettings = serde_json::from_str(r#"{"quick":true}"#).unwrap();
        assert!(s.quick);
        assert_eq!(
            serde_json::from_str::<DiagnosticsSettings>("{}").unwrap(),
            DiagnosticsSettings::default()
        );
        assert!(serde_json::from_str::<DiagnosticsSettings>(r#"{"fast":true}"#).is_err());
    }
}
