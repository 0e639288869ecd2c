//! Which code each stage runs: the code part of its fingerprint.
//!
//! A stage's code is a set of units, each with the hash embedded at build time (see
//! [`super::code_hash`]):
//! - the workspace crates in [`STAGES`]`.crates` plus every crate they depend on, transitively,
//!   by their `Cargo.toml` `[dependencies]`;
//! - the xtask files in [`STAGES`]`.files` plus every xtask file they name (`crate::m`,
//!   `super::m`), transitively — except the [`RUNNER`], which decides whether and in which order
//!   stages run, not what they compute (a stage's settings structs are hashed as settings).
//!
//! With today's manifests and sources that gives:
//!
//! | stage | crates | xtask files (under `xtask/src/`) |
//! |---|---|---|
//! | diagnostics | hwdiag | cmd_diagnose.rs |
//! | import | core, kernels, hwdiag | pipeline/import.rs, pipeline/summary.rs, cmd_import.rs, stage_data.rs, common.rs, report.rs |
//! | eval | core, kernels, hwdiag | pipeline/eval.rs, cmd_eval.rs, cmd_bench.rs, common.rs, report.rs |
//! | baseline | core, kernels, hwdiag | pipeline/baseline.rs, pipeline/summary.rs, stage_baseline.rs, stage_data.rs, common.rs, report.rs |
//! | int4_native | core, quant, kernels, hwdiag | stage_quant.rs, stage_data.rs, common.rs, report.rs |
//! | pruned | core, prune, quant, kernels, hwdiag | stage_prune.rs, stage_quant.rs, stage_data.rs, common.rs, report.rs |
//! | mixed_precision | core, mixed, quant, kernels, hwdiag | stage_mixed.rs, stage_quant.rs, stage_data.rs, common.rs, report.rs |
//! | kernels | core, kernels, hwdiag | stage_kernels.rs, report.rs |
//! | final_report | core | stage_final.rs, svg.rs, stage_data.rs, common.rs, report.rs |
//!
//! (kernels depends on hwdiag for CPU feature detection, so every stage that measures on the
//! native runtime includes hwdiag.) The unit tests check this table against the derivation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use anyhow::{Result, bail};

pub use super::code_hash::CodeTable;

/// The crates a stage calls itself and the xtask files it starts from; [`CodeTable::stage_code`]
/// closes both over their dependencies.
#[derive(Debug, Clone, Copy)]
pub struct StageCode {
    /// Stage name.
    pub stage: &'static str,
    /// Workspace crates whose code shapes the stage's outputs.
    pub crates: &'static [&'static str],
    /// Files under `xtask/src/` holding the stage's code.
    pub files: &'static [&'static str],
}

/// Every stage's starting points. The crates are those whose code shapes the stage's outputs:
/// a stage that reports a native-runtime measurement (PPL, latency, samples) names
/// `squish-kernels`. Deliberately not named (the test `stage_crates_cover_what_their_files_call`
/// lists these exceptions): squish-quant for `import`/`baseline` (`stage_data::load_input`
/// computes calibration windows, which their own-checkpoint summary does not use); squish-core
/// for `diagnostics` (only writes the report files); squish-quant and squish-kernels for
/// `final_report` (it uses one constant of `stage_data.rs`, and reads numbers from the reports).
pub const STAGES: &[StageCode] = &[
    StageCode {
        stage: "diagnostics",
        crates: &["squish-hwdiag"],
        files: &["cmd_diagnose.rs"],
    },
    StageCode {
        stage: "import",
        crates: &["squish-core", "squish-kernels"],
        files: &["pipeline/import.rs", "report.rs"],
    },
    StageCode {
        stage: "eval",
        crates: &["squish-core", "squish-kernels"],
        files: &["pipeline/eval.rs", "report.rs"],
    },
    StageCode {
        stage: "baseline",
        crates: &["squish-core", "squish-kernels"],
        files: &["pipeline/baseline.rs", "report.rs"],
    },
    StageCode {
        stage: "int4_native",
        crates: &["squish-core", "squish-quant", "squish-kernels"],
        files: &["stage_quant.rs", "report.rs"],
    },
    StageCode {
        stage: "pruned",
        crates: &[
            "squish-core",
            "squish-prune",
            "squish-quant",
            "squish-kernels",
        ],
        files: &["stage_prune.rs", "report.rs"],
    },
    StageCode {
        stage: "mixed_precision",
        crates: &[
            "squish-core",
            "squish-mixed",
            "squish-quant",
            "squish-kernels",
        ],
        files: &["stage_mixed.rs", "report.rs"],
    },
    StageCode {
        stage: "kernels",
        crates: &["squish-core", "squish-kernels"],
        files: &["stage_kernels.rs", "report.rs"],
    },
    StageCode {
        stage: "final_report",
        crates: &["squish-core"],
        files: &["stage_final.rs", "report.rs"],
    },
];

/// The pipeline runner's files: never part of a stage's code, and not followed when closing a
/// stage's files over the modules they name (every stage names `crate::pipeline::Ctx`).
pub const RUNNER: &[&str] = &[
    "main.rs",
    "pipeline/mod.rs",
    "pipeline/config.rs",
    "pipeline/stages.rs",
    "pipeline/code.rs",
    "pipeline/code_hash.rs",
];

/// The code hashes embedded in this binary by `xtask/build.rs`.
pub fn embedded() -> &'static CodeTable {
    static TABLE: OnceLock<CodeTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        CodeTable::from_text(include_str!(concat!(env!("OUT_DIR"), "/code_hashes.txt")))
            .expect("xtask/build.rs writes a well-formed table")
    })
}

impl CodeTable {
    /// `roots` and every workspace crate they depend on, transitively.
    pub fn crate_closure(&self, roots: &[&str]) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        while let Some(name) = todo.pop() {
            if seen.contains(&name) {
                continue;
            }
            let Some(c) = self.crates.iter().find(|c| c.name == name) else {
                bail!("code hashes: no workspace crate `{name}`");
            };
            todo.extend(c.deps.iter().cloned());
            seen.insert(name);
        }
        Ok(seen)
    }

    /// `roots` and every xtask file they name, transitively, without the [`RUNNER`].
    pub fn file_closure(&self, roots: &[&str]) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        while let Some(path) = todo.pop() {
            if seen.contains(&path) || RUNNER.contains(&path.as_str()) {
                continue;
            }
            let Some(f) = self.files.iter().find(|f| f.path == path) else {
                bail!("code hashes: no file xtask/src/{path}");
            };
            todo.extend(f.refs.iter().cloned());
            seen.insert(path);
        }
        Ok(seen)
    }

    /// The code of `stage`: unit (`squish-quant`, `xtask/src/stage_quant.rs`, …) → hash.
    pub fn stage_code(&self, stage: &str) -> Result<BTreeMap<String, String>> {
        let Some(sc) = STAGES.iter().find(|s| s.stage == stage) else {
            bail!("unknown stage `{stage}` (no entry in pipeline::code::STAGES)");
        };
        let mut code = BTreeMap::new();
        for name in self.crate_closure(sc.crates)? {
            let c = self.crates.iter().find(|c| c.name == name).expect("closed");
            code.insert(name, c.hash.clone());
        }
        for path in self.file_closure(sc.files)? {
            let f = self.files.iter().find(|f| f.path == path).expect("closed");
            code.insert(format!("xtask/src/{path}"), f.hash.clone());
        }
        Ok(code)
    }
}
