//! Pipeline stage `int4_native` (any stage of kind "quantize"): another stage's F32 checkpoint →
//! packed INT4/INT8 through squish-quant (RTN, MSE clipping, GPTQ, or QAT), measured by the
//! native runtime.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use squish_core::checkpoint::Checkpoint;
use squish_core::tokenizer::Tokenizer;
use squish_core::train::TrainConfig;
use squish_quant::{
    Calibration, GptqConfig, Method, MseConfig, QatConfig, QatData, QatInit, QatScales,
    QuantConfig, QuantFormat, QuantReport, SmallFormat, qat_checkpoint, quantize_checkpoint,
};
use std::collections::BTreeMap;

use crate::common::progress_bar;
use crate::pipeline::Ctx;
use crate::stage_data::{
    Measured, StageInput, load_input, reference_ppl, sample_md, save_and_measure, summary_json,
    summary_md,
};

/// `[stages.int4_native]`: what to quantize and how.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantStage {
    /// The stage whose checkpoint is quantized.
    pub input: String,
    /// The stage whose PPL is the F32 reference for ΔPPL.
    #[serde(default = "crate::stage_data::default_reference")]
    pub reference: String,
    /// Settings of squish-quant (`[stages.<name>.quant]`).
    pub quant: QuantSettings,
}

/// The squish-quant settings a stage names (also used by `pruned` for its INT4 variant).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantSettings {
    /// 4 or 8.
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// Group size along the input dimension; 0 = one group per row.
    #[serde(default = "default_group")]
    pub group: usize,
    /// Asymmetric (zero points).
    #[serde(default)]
    pub asym: bool,
    /// `rtn`, `mse`, `gptq` (post-training).
    #[serde(default = "default_method")]
    pub method: String,
    /// Quantize the embedding / classifier too.
    #[serde(default = "default_true")]
    pub quantize_embedding: bool,
    /// Storage of the small tensors (norms, SSM A_log/D/conv/dt bias): `f32` or `f16`.
    #[serde(default)]
    pub small: SmallFormat,
    /// QAT fine-tuning (`[...quant.qat]`), required when `method = "qat"`.
    #[serde(default)]
    pub qat: Option<QatSettings>,
}

/// Quantization-aware training: fake-quant + straight-through estimator, distillation from the
/// F32 model, export on the same grid (squish-quant's `qat_checkpoint`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QatSettings {
    /// Training (`distill_alpha = 1.0` = pure KL to the F32 teacher).
    pub train: TrainConfig,
    /// Latent starting point: `f32`, `rtn`, `mse`, `gptq`.
    #[serde(default)]
    pub init: QatInit,
    /// Scale rule at every step and at export.
    #[serde(default)]
    pub scales: QatScales,
}

/// Runs QAT of `ckpt` with `quant` (default format / tensor selection) and per-tensor
/// overrides; returns the packed checkpoint and its report.
pub fn run_qat(
    input: &StageInput,
    ckpt: &Checkpoint,
    quant: QuantConfig,
    per_tensor: BTreeMap<String, Option<QuantFormat>>,
    q: &QatSettings,
) -> Result<(Checkpoint, QuantReport)> {
    let cfg = QatConfig {
        quant,
        per_tensor,
        train: q.train.clone(),
        init: q.init,
        scales: q.scales.clone(),
        ..QatConfig::default()
    };
    let calib = if q.init == QatInit::Gptq
        || matches!(q.scales, QatScales::Mse(_) | QatScales::Learned(_))
    {
        Some(calibrate(input, ckpt)?)
    } else {
        None
    };
    let data = QatData {
        train: &input.train,
        valid: &input.valid,
        bos: input.loaded.tokenizer.bos_id(),
    };
    let pb = progress_bar(q.train.steps as u64, "qat");
    let out = qat_checkpoint(ckpt, &cfg, &data, calib.as_ref(), &mut |p| {
        pb.set_position(p.step as u64);
        pb.set_message(format!("loss {:.4}", p.loss));
        if p.valid_nats.is_some() {
            tracing::info!(step = p.step, loss = p.loss, valid = p.valid_nats, "qat");
        }
    })?;
    pb.finish_and_clear();
    Ok(out)
}

fn default_bits() -> u32 {
    4
}
fn default_group() -> usize {
    32
}
fn default_method() -> String {
    "gptq".into()
}
fn default_true() -> bool {
    true
}

impl QuantSettings {
    /// The squish-quant configuration these settings describe for `ckpt`: linear weights whose
    /// rows are narrower than the group (SsmMoe `dt_proj`, `[d_inner, dt_rank]`) stay unquantized
    /// — squish-quant refuses a group wider than the row rather than pad it.
    pub fn quant_config_for(&self, ckpt: &Checkpoint) -> Result<QuantConfig> {
        let mut c = self.quant_config()?;
        if self.group > 0 {
            for (name, t) in ckpt.weights.iter() {
                if squish_quant::pipeline::is_linear_weight(name)
                    && t.shape.len() == 2
                    && t.shape[1] < self.group
                {
                    c.keep.push(name.clone());
                }
            }
        }
        Ok(c)
    }

    /// The squish-quant configuration these settings describe.
    pub fn quant_config(&self) -> Result<QuantConfig> {
        let format =
            QuantFormat::new(self.bits, (self.group > 0).then_some(self.group), self.asym)?;
        let method = match self.method.as_str() {
            "rtn" => Method::Rtn,
            "mse" => Method::Mse(MseConfig::default()),
            "gptq" | "qat" => Method::Gptq(GptqConfig::default()),
            other => bail!("quantization method `{other}`: expected rtn, mse, gptq or qat"),
        };
        let mut c = QuantConfig::new(format, method);
        c.quantize_embedding = self.quantize_embedding;
        c.small = self.small;
        Ok(c)
    }

    /// Whether the method needs calibration statistics.
    pub fn needs_calibration(&self) -> bool {
        self.method == "mse" || self.method == "gptq"
    }

    /// The equivalent command line.
    pub fn command(&self, input: &std::path::Path, out: &std::path::Path) -> String {
        format!(
            "cargo xtask quantize --checkpoint {} --out {} --bits {} --group {} --method {}{}{}",
            input.display(),
            out.display(),
            self.bits,
            if self.group == 0 {
                "row".to_string()
            } else {
                self.group.to_string()
            },
            self.method,
            if self.asym { " --asym" } else { "" },
            if self.small == SmallFormat::F16 {
                " --small f16"
            } else {
                ""
            }
        )
    }
}

/// Quantizes the linear weights that [`QuantSettings::quant_config_for`] kept because their rows
/// are narrower than the group (pruned SsmMoe `out_proj`/expert `w2`, `dt_proj`) with one group
/// per row instead, same bits/method, so no weight is left in F32 for being narrow.
fn narrow_rows_per_row(
    src: &Checkpoint,
    q: &mut Checkpoint,
    cfg: &QuantConfig,
    calib: Option<&Calibration>,
) -> Result<()> {
    let format = QuantFormat::new(cfg.format.bits_u32(), None, cfg.format.asym)?;
    let spec = squish_quant::QuantSpec {
        format,
        method: cfg.method.clone(),
    };
    for name in &cfg.keep {
        let t = src.weights.get(name)?;
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let stats = calib.and_then(|c| c.tensors.get(name));
        let packed = squish_quant::quantize_tensor(&t.to_f32(), rows, cols, &spec, stats)
            .with_context(|| format!("quantizing {name} per row"))?;
        q.weights.insert(
            name.clone(),
            squish_core::checkpoint::WeightTensor {
                shape: t.shape.clone(),
                data: squish_core::checkpoint::TensorData::Quant(packed),
            },
        );
    }
    Ok(())
}

/// Calibration statistics of `ckpt` (F32) on the input's calibration windows.
pub fn calibrate(input: &StageInput, ckpt: &Checkpoint) -> Result<Calibration> {
    let device = squish_core::model::CpuBackend::default().device();
    Calibration::collect(ckpt, &input.calib, &device).context("collecting calibration statistics")
}

/// Quantizes `ckpt` (the F32 checkpoint with sha256 `parent_sha`, tokenized data from `input`)
/// with `settings`, saves it to `out` and measures it; `reference` is the F32 PPL of ΔPPL.
#[allow(clippy::too_many_arguments)]
pub fn quantize_and_measure(
    ctx: &Ctx,
    input: &StageInput,
    ckpt: &Checkpoint,
    parent_sha: &str,
    settings: &QuantSettings,
    stage: &str,
    out: &std::path::Path,
    reference: Option<f64>,
) -> Result<(QuantReport, Measured)> {
    let (mut q, mut report) = if settings.method == "qat" {
        let qs = settings
            .qat
            .as_ref()
            .context("method = \"qat\" needs a [..quant.qat] table with its training settings")?;
        // QAT falls back to per-row by itself where the group is wider than the row.
        run_qat(input, ckpt, settings.quant_config()?, BTreeMap::new(), qs)?
    } else {
        let cfg = settings.quant_config_for(ckpt)?;
        let calib = if settings.needs_calibration() {
            Some(calibrate(input, ckpt)?)
        } else {
            None
        };
        let (mut q, r) = quantize_checkpoint(ckpt, &cfg, calib.as_ref())?;
        narrow_rows_per_row(ckpt, &mut q, &cfg, calib.as_ref())?;
        (q, r)
    };
    q.provenance.stage = stage.into();
    q.provenance.parent_sha256 = Some(parent_sha.to_string());
    let (_, m) = save_and_measure(&ctx.cfg.data, input, q, out)?;
    report.finish_row(m.file_bytes, Some(m.ppl.ppl), reference);
    Ok((report, m))
}

/// Runs the stage; returns (JSON, Markdown) of its report and the checkpoint path.
pub fn run(
    ctx: &Ctx,
    stage: &str,
    c: &QuantStage,
    fingerprint: &str,
) -> Result<(serde_json::Value, String)> {
    let t0 = std::time::Instant::now();
    let input = load_input(ctx, &c.input)?;
    let out = ctx.checkpoint_path(stage);
    let reference = reference_ppl(ctx, &c.reference);
    let (report, m) = quantize_and_measure(
        ctx,
        &input,
        &input.loaded.ckpt,
        &input.sha256,
        &c.quant,
        stage,
        &out,
        reference,
    )?;
    let seconds = t0.elapsed().as_secs_f64();
    println!(
        "  [{stage}] {} bytes, PPL {:.4}{}",
        m.file_bytes,
        m.ppl.ppl,
        reference
            .map(|r| format!(" (Δ {:+.2} %)", 100.0 * (m.ppl.ppl / r - 1.0)))
            .unwrap_or_default()
    );
    let command = c.quant.command(&input.loaded.path, &out);
    let json = json!({
        "stage": stage,
        "command": command,
        "fingerprint": fingerprint,
        "inputs": {"checkpoint": {"path": input.loaded.path, "sha256": input.sha256}, "corpus": input.corpus},
        "summary": summary_json(&m, reference, seconds),
        "quantization": report,
        "settings": c,
    });
    let md = format!(
        "# Stage `{stage}` — {} of `{}`\n\n| what | value |\n|---|---|\n{}| bits/param (vs F32 parameters) | {:.3} |\n| kept F32/F16 bytes | {} ({:.1} % of tensor bytes) |\n| mean layer-output error (calibration) | {} |\n\nCommand: `{command}`\n{}",
        report.method,
        c.input,
        summary_md(&m, reference),
        m.file_bytes as f64 * 8.0 / report.parameters.max(1) as f64,
        report.kept_bytes,
        100.0 * report.kept_share,
        report
            .mean_output_error()
            .map(|e| format!("{e:.4}"))
            .unwrap_or_else(|| "-".into()),
        sample_md(&ctx.cfg.data, &m)
    );
    Ok((json, md))
}
