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
    pub diagnostics: Option<crate::cmd_diagnose::DiagnosticsStage>,
    /// `baseline`: train the SsmMoe model (and its tokenizer) from text.
    pub baseline: Option<crate::stage_baseline::BaselineStage>,
    /// `int4_native`: packed INT4/INT8 of another stage's checkpoint (squish-quant).
    pub int4_native: Option<crate::stage_quant::QuantStage>,
    /// `pruned`: structured pruning (squish-prune), optionally followed by INT4.
    pub pruned: Option<crate::stage_prune::PruneStage>,
    /// `mixed_precision`: per-tensor formats under a byte budget (squish-mixed).
    pub mixed_precision: Option<crate::stage_mixed::MixedStage>,
    /// `kernels`: the native runtime's latency on every stage's checkpoint.
    pub kernels: Option<crate::stage_kernels::KernelsStage>,
    /// `final_report`: the success criteria, stage table, samples and plots.
    pub final_report: Option<crate::stage_final::FinalStage>,
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

    /// The stages whose outputs `stage` reads (they must run before it).
    pub fn inputs_of(&self, stage: &str) -> Vec<String> {
        let s = &self.stages;
        match stage {
            "eval" => s.eval.iter().map(|e| e.input.clone()).collect(),
            "int4_native" => s
                .int4_native
                .iter()
                .flat_map(|q| [q.input.clone(), q.reference.clone()])
                .collect(),
            "pruned" => s
                .pruned
                .iter()
                .flat_map(|q| [q.input.clone(), q.reference.clone()])
                .collect(),
            "mixed_precision" => s
                .mixed_precision
                .iter()
                .flat_map(|q| [q.input.clone(), q.reference.clone()])
                .collect(),
            "kernels" => s
                .kernels
                .iter()
                .flat_map(|k| k.inputs.iter().filter(|i| self.order.contains(i)).cloned())
                .collect(),
            "final_report" => s
                .final_report
                .iter()
                .flat_map(|f| {
                    let mut v: Vec<String> = f
                        .stages
                        .iter()
                        .filter(|i| self.order.contains(i))
                        .cloned()
                        .collect();
                    v.push(f.reference.clone());
                    v.push(f.deliverable.clone());
                    v
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn has_stage(&self, name: &str) -> bool {
        match name {
            "import" => self.stages.import.is_some(),
            "eval" => self.stages.eval.is_some(),
            "baseline" => self.stages.baseline.is_some(),
            "diagnostics" => self.stages.diagnostics.is_some(),
            "int4_native" => self.stages.int4_native.is_some(),
            "kernels" => self.stages.kernels.is_some(),
            "pruned" => self.stages.pruned.is_some(),
            "mixed_precision" => self.stages.mixed_precision.is_some(),
            "final_report" => self.stages.final_report.is_some(),
            _ => false,
        }
    }
}
