//! The pipeline configuration file (`configs/*.toml`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// A whole pipeline configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where outputs go and what the run is called.
    pub run: RunConfig,
    /// Stage names in execution order.
    pub order: Vec<String>,
    /// Corpus and measurement settings shared by the compression stages.
    #[serde(default)]
    pub data: crate::stage_data::DataConfig,
    /// Per-stage settings, keyed by stage name.
    pub stages: Stages,
}

/// Output locations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run name; reports are `<report_dir>/<name>_<stage>.{md,json}`.
    pub name: String,
    /// Checkpoints land in `<checkpoint_dir>/<stage>/`.
    pub checkpoint_dir: PathBuf,
    /// Reports land here.
    pub report_dir: PathBuf,
}

/// Settings of every stage kind (a stage is present when its table is).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    /// `import`: a llama2.c checkpoint.
    pub import: Option<ImportStage>,
    /// `eval`: perplexity of another stage's checkpoint.
    pub eval: Option<EvalStage>,
    /// `diagnostics`: probe the hardware (squish-hwdiag).
    pub diagnostics: Option<squish_hwdiag::stage::DiagnosticsSettings>,
    /// `baseline`: train the SsmMoe model (and its tokenizer) from text.
    pub baseline: Option<squish_core::baseline::BaselineStage>,
    /// `int4_native`: packed INT4/INT8 of another stage's checkpoint (squish-quant).
    pub int4_native: Option<crate::stage_quant::QuantStage>,
    /// `pruned`: structured pruning (squish-prune), optionally followed by INT4.
    pub pruned: Option<crate::stage_prune::PruneStage>,
    /// `mixed_precision`: per-tensor formats under a byte budget (squish-mixed).
    pub mixed_precision: Option<crate::stage_mixed::MixedStage>,
    /// `kernels`: the native runtime's latency on every stage's checkpoint.
    pub kernels: Option<squish_kernels::speed::KernelsSettings>,
    /// `final_report`: the success criteria, stage table, samples and plots.
    pub final_report: Option<crate::stage_final::FinalStage>,
}

/// One configured stage with its settings: the pipeline's registry. Every per-stage decision
/// (inputs, fingerprint, run) is a `match` on this enum, so the compiler checks that a new stage
/// is handled everywhere; adding a stage is its settings field in [`Stages`], a variant here and
/// one line in [`Stages::get`].
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// `import`.
    Import(&'a ImportStage),
    /// `eval`.
    Eval(&'a EvalStage),
    /// `diagnostics`.
    Diagnostics(&'a squish_hwdiag::stage::DiagnosticsSettings),
    /// `baseline`.
    Baseline(&'a squish_core::baseline::BaselineStage),
    /// `int4_native`.
    Int4Native(&'a crate::stage_quant::QuantStage),
    /// `pruned`.
    Pruned(&'a crate::stage_prune::PruneStage),
    /// `mixed_precision`.
    MixedPrecision(&'a crate::stage_mixed::MixedStage),
    /// `kernels`.
    Kernels(&'a squish_kernels::speed::KernelsSettings),
    /// `final_report`.
    FinalReport(&'a crate::stage_final::FinalStage),
}

impl Stages {
    /// The stage named `name`, if its table is present (the registry: one line per stage).
    pub fn get(&self, name: &str) -> Option<Stage<'_>> {
        match name {
            "import" => self.import.as_ref().map(Stage::Import),
            "eval" => self.eval.as_ref().map(Stage::Eval),
            "diagnostics" => self.diagnostics.as_ref().map(Stage::Diagnostics),
            "baseline" => self.baseline.as_ref().map(Stage::Baseline),
            "int4_native" => self.int4_native.as_ref().map(Stage::Int4Native),
            "pruned" => self.pruned.as_ref().map(Stage::Pruned),
            "mixed_precision" => self.mixed_precision.as_ref().map(Stage::MixedPrecision),
            "kernels" => self.kernels.as_ref().map(Stage::Kernels),
            "final_report" => self.final_report.as_ref().map(Stage::FinalReport),
            _ => None,
        }
    }
}

/// `[stages.import]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportStage {
    /// llama2.c v0 checkpoint.
    pub model: PathBuf,
    /// llama2.c tokenizer.bin.
    pub tokenizer: PathBuf,
}

/// `[stages.eval]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// The stage whose checkpoint is evaluated.
    pub input: String,
    /// Text to score.
    pub data: PathBuf,
    /// Context length.
    #[serde(default = "default_ctx")]
    pub ctx: usize,
    /// Protocol.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Chunks per batch.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// burn backend.
    #[serde(default = "default_backend")]
    pub backend: String,
}

fn default_ctx() -> usize {
    256
}
fn default_protocol() -> String {
    "llama-cpp".into()
}
fn default_batch() -> usize {
    8
}
fn default_backend() -> String {
    "flex".into()
}

impl PipelineConfig {
    /// Loads and validates a pipeline config; errors carry the file, line and key.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: PipelineConfig = squish_core::config::load_toml(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        for (i, name) in self.order.iter().enumerate() {
            if !self.has_stage(name) {
                bail!(
                    "config {}: `order` names stage `{name}` but there is no [stages.{name}] table",
                    path.display()
                );
            }
            if self.order[..i].contains(name) {
                bail!(
                    "config {}: stage `{name}` appears twice in `order`",
                    path.display()
                );
            }
        }
        let pos = |n: &str| self.order.iter().position(|s| s == n);
        for stage in &self.order {
            for input in self.inputs_of(stage) {
                match (pos(&input), pos(stage)) {
                    (Some(i), Some(j)) if i < j => {}
                    (None, _) => bail!(
                        "config {}: [stages.{stage}] input `{input}` is not a stage in `order`",
                        path.display(),
                    ),
                    _ => bail!(
                        "config {}: [stages.{stage}] input `{input}` must come before {stage} in `order`",
                        path.display(),
                    ),
                }
            }
        }
        Ok(())
    }

    /// The stage named `name` (its table is present: checked when the config is loaded).
    pub fn stage(&self, name: &str) -> Result<Stage<'_>> {
        match self.stages.get(name) {
            Some(s) => Ok(s),
            None => bail!("no [stages.{name}] table for stage `{name}`"),
        }
    }

    /// The stages whose outputs `stage` reads (they must run before it).
    pub fn inputs_of(&self, stage: &str) -> Vec<String> {
        let in_order = |names: &[String]| -> Vec<String> {
            names
                .iter()
                .filter(|i| self.order.contains(i))
                .cloned()
                .collect()
        };
        match self.stages.get(stage) {
            Some(Stage::Eval(e)) => vec![e.input.clone()],
            Some(Stage::Int4Native(q)) => vec![q.input.clone(), q.reference.clone()],
            Some(Stage::Pruned(q)) => vec![q.input.clone(), q.reference.clone()],
            Some(Stage::MixedPrecision(q)) => {
                let mut v = vec![q.input.clone(), q.reference.clone()];
                v.extend(q.teacher.clone());
                v
            }
            Some(Stage::Kernels(k)) => in_order(&k.inputs),
            Some(Stage::FinalReport(f)) => {
                let mut v = in_order(&f.stages);
                v.push(f.reference.clone());
                v.push(f.deliverable.clone());
                v
            }
            Some(Stage::Import(_) | Stage::Diagnostics(_) | Stage::Baseline(_)) | None => {
                Vec::new()
            }
        }
    }

    fn has_stage(&self, name: &str) -> bool {
        self.stages.get(name).is_some()
    }
}
