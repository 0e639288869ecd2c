//! Pipeline stage `int4_native` (any stage of kind "quantize"): another stage's F32 checkpoint →
//! packed INT4/INT8 by squish-quant's stage ([`squish_quant::run`]: RTN, MSE clipping, GPTQ, or
//! QAT), measured by the native runtime.

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::json;
use squish_core::checkpoint::Checkpoint;
use squish_kernels::measure::Measurement;
use squish_quant::{QuantEvent, QuantReport, QuantSettings, SmallFormat};

use crate::common::progress_bar;
use crate::pipeline::Ctx;
use crate::stage_data::{
    StageInput, load_input, reference_ppl, sample_md, save_and_measure, summary, summary_md,
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
    /// Settings of squish-quant's stage (`[stages.<name>.quant]`).
    pub quant: QuantSettings,
    /// Also quantize the same input with a learned codebook (`[stages.<name>.codebook]`, e.g.
    /// 4-bit levels per tensor beside the INT4 grid), written to `<name>/cb<bits>/` and reported
    /// as the row `<name>+cb<bits>`.
    #[serde(default)]
    pub codebook: Option<QuantSettings>,
}

/// A progress bar for a quantization stage: QAT steps when `settings` train, hidden otherwise.
pub fn quant_progress(settings: &QuantSettings) -> Result<ProgressBar> {
    Ok(match settings.qat_settings()? {
        Some(q) => progress_bar(q.train.steps as u64, "qat"),
        None => ProgressBar::hidden(),
    })
}

/// Shows a squish-quant event: QAT steps on `pb`, calibration and validation in the log.
pub fn show_quant_event(pb: &ProgressBar, e: &QuantEvent) {
    match e {
        QuantEvent::Calibrated {
            windows,
            tokens,
            seconds,
        } => tracing::info!(windows, tokens, seconds, "calibration statistics"),
        QuantEvent::Train(p) => {
            pb.set_position(p.step as u64);
            pb.set_message(format!("loss {:.4}", p.loss));
            if p.valid_nats.is_some() {
                tracing::info!(step = p.step, loss = p.loss, valid = p.valid_nats, "qat");
            }
        }
    }
}

/// The command line equivalent to `settings` (`cargo xtask quantize …`).
pub fn quant_command(
    settings: &QuantSettings,
    input: &std::path::Path,
    out: &std::path::Path,
) -> String {
    format!(
        "cargo xtask quantize --checkpoint {} --out {} --bits {} --group {} --method {}{}{}",
        input.display(),
        out.display(),
        settings.bits,
        if settings.group == 0 {
            "row".to_string()
        } else {
            settings.group.to_string()
        },
        settings.method.name(),
        if settings.asym { " --asym" } else { "" },
        if settings.small == SmallFormat::F16 {
            " --small f16"
        } else {
            ""
        }
    )
}

/// Quantizes `ckpt` (the F32 checkpoint with sha256 `parent_sha`, tokenized data from `input`)
/// with squish-quant's stage, saves it to `out` and measures it; `reference` is the F32 PPL of
/// ΔPPL.
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
) -> Result<(QuantReport, Measurement)> {
    let pb = quant_progress(settings)?;
    let q = squish_quant::run(&input.stage_input(ckpt), settings, &mut |e| {
        show_quant_event(&pb, e)
    })
    .with_context(|| format!("stage `{stage}`: quantizing"))?;
    pb.finish_and_clear();
    let (mut ckpt, mut report) = (q.checkpoint, q.report);
    ckpt.provenance.stage = stage.into();
    ckpt.provenance.parent_sha256 = Some(parent_sha.to_string());
    let (_, m) = save_and_measure(&ctx.cfg.data, input, ckpt, out)?;
    report.finish_row(m.file_bytes, Some(m.ppl.ppl), reference);
    Ok((report, m))
}

/// Runs the stage; returns (JSON, Markdown) of its report and the extra files it wrote (the
/// codebook copy's checkpoint and tokenizer).
pub fn run(
    ctx: &Ctx,
    stage: &str,
    c: &QuantStage,
    fingerprint: &str,
) -> Result<(serde_json::Value, String, Vec<std::path::PathBuf>)> {
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
    let command = quant_command(&c.quant, &input.loaded.path, &out);
    let (mut extra, mut cb_md, mut cb_json) = (Vec::new(), String::new(), serde_json::Value::Null);
    if let Some(q) = &c.codebook {
        let label = format!("cb{}", q.bits);
        let qout = out
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(&label)
            .join("model.safetensors");
        let (qr, qm) = quantize_and_measure(
            ctx,
            &input,
            &input.loaded.ckpt,
            &input.sha256,
            q,
            stage,
            &qout,
            reference,
        )?;
        println!(
            "  [{stage}] + {label} ({}): {} bytes, PPL {:.4}{}",
            q.method.name(),
            qm.file_bytes,
            qm.ppl.ppl,
            reference
                .map(|r| format!(" (Δ {:+.2} %)", 100.0 * (qm.ppl.ppl / r - 1.0)))
                .unwrap_or_default()
        );
        cb_md = format!(
            "\n## {} → {label}, {} ({})\n\n| what | value |\n|---|---|\n{}| bits/param (vs F32 parameters) | {:.3} |\n\nCommand: `{}`\n",
            c.input,
            qr.method,
            qout.display(),
            summary_md(&qm, &input.eval, reference),
            qm.file_bytes as f64 * 8.0 / qr.parameters.max(1) as f64,
            quant_command(q, &input.loaded.path, &qout)
        );
        cb_json = json!({"label": label, "summary": summary(&qm, &input.eval, reference, 0.0), "quantization": qr});
        extra.extend(crate::common::checkpoint_files(&qout)?);
    }
    let json = json!({
        "stage": stage,
        "command": command,
        "fingerprint": fingerprint,
        "inputs": {"checkpoint": {"path": input.loaded.path, "sha256": input.sha256}, "corpus": input.corpus},
        "summary": summary(&m, &input.eval, reference, seconds),
        "quantization": report,
        "settings": c,
        "codebook_label": cb_json["label"],
        "codebook_summary": cb_json["summary"],
        "codebook_quantization": cb_json["quantization"],
    });
    let md = format!(
        "# Stage `{stage}` — {} of `{}`\n\n| what | value |\n|---|---|\n{}| bits/param (vs F32 parameters) | {:.3} |\n| kept F32/F16 bytes | {} ({:.1} % of tensor bytes) |\n| mean layer-output error (calibration) | {} |\n\nCommand: `{command}`\n{}",
        report.method,
        c.input,
        summary_md(&m, &input.eval, reference),
        m.file_bytes as f64 * 8.0 / report.parameters.max(1) as f64,
        report.kept_bytes,
        100.0 * report.kept_share,
        report
            .mean_output_error()
            .map(|e| format!("{e:.4}"))
            .unwrap_or_else(|| "-".into()),
        sample_md(&ctx.cfg.data, &m)
    ) + &cb_md;
    Ok((json, md, extra))
}
