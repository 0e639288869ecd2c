//! Pipeline stage `mixed_precision`: per-tensor formats for another stage's F32 checkpoint by
//! squish-mixed's stage ([`squish_mixed::run`]: measured sensitivity under a byte budget, then QAT
//! of the chosen mix); the Pareto frontier as SVG; measured by the native runtime.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use squish_core::fsutil;
use squish_mixed::{MixedConfig, MixedEvent, MixedStageConfig, check_budget, frontier_svg};
use squish_quant::{QatSettings, QuantEvent};

use crate::common::{progress_bar, save_with_tokenizer};
use crate::pipeline::Ctx;
use crate::stage_data::{load_input, measure, reference_ppl, sample_md, summary, summary_md};
use crate::stage_quant::show_quant_event;

/// `[stages.mixed_precision]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MixedStage {
    /// The stage whose (F32) checkpoint gets mixed formats.
    pub input: String,
    /// The stage whose PPL is the F32 reference for ΔPPL.
    #[serde(default = "crate::stage_data::default_reference")]
    pub reference: String,
    /// The stage whose F32 checkpoint the QAT of the mix distils from (default: the input). With
    /// `teacher = "baseline"` and a pruned input, QAT also continues the pruned model's recovery
    /// from the unpruned model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    /// squish-mixed settings (`[stages.mixed_precision.mixed]`); the sensitivity cache defaults
    /// to the stage's checkpoint directory.
    pub mixed: MixedConfig,
    /// QAT of the chosen per-tensor formats (`[stages.mixed_precision.qat]`): fine-tunes the
    /// latent F32 weights through fake-quant with exactly the mix's formats, then exports them.
    #[serde(default)]
    pub qat: Option<QatSettings>,
}

/// Runs the stage: (JSON, Markdown, extra output files).
pub fn run(
    ctx: &Ctx,
    stage: &str,
    c: &MixedStage,
    fingerprint: &str,
) -> Result<(serde_json::Value, String, Vec<PathBuf>)> {
    let t0 = std::time::Instant::now();
    let input = load_input(ctx, &c.input)?;
    let out = ctx.checkpoint_path(stage);
    let mut cfg = MixedStageConfig {
        mixed: c.mixed.clone(),
        qat: c.qat.clone(),
    };
    if cfg.mixed.cache_dir.is_none() {
        cfg.mixed.cache_dir = out.parent().map(|p| p.join("sensitivity"));
    }
    let limit = cfg
        .mixed
        .budget
        .byte_limit(input.loaded.ckpt.weights.param_count());
    let pb = progress_bar(0, "sensitivity");
    let qat_pb = match &cfg.qat {
        Some(q) => progress_bar(q.train.steps as u64, "qat"),
        None => indicatif::ProgressBar::hidden(),
    };
    let teacher = match &c.teacher {
        Some(t) => {
            let path = ctx.checkpoint_path(t);
            Some(
                squish_core::checkpoint::load(&path)
                    .with_context(|| format!("loading the QAT teacher {}", path.display()))?,
            )
        }
        None => None,
    };
    let mut stage_input = input.stage_input(&input.loaded.ckpt);
    stage_input.teacher = teacher.as_ref();
    let stage_out = squish_mixed::run(&stage_input, &cfg, &mut |e| match e {
        MixedEvent::Sensitivity { done, total, .. } => {
            pb.set_length(*total as u64);
            pb.set_position(*done as u64);
        }
        MixedEvent::CacheHit { path } => {
            tracing::info!(path = %path.display(), "sensitivity cache hit");
        }
        MixedEvent::Quant(q) => {
            if let QuantEvent::Train(_) = q {
                pb.finish_and_clear(); // the sensitivities are done; one bar at a time
            }
            show_quant_event(&qat_pb, q)
        }
        MixedEvent::QatExported {
            mix_bytes,
            qat_bytes,
        } => println!("  [{stage}] QAT of the chosen mix: {mix_bytes} → {qat_bytes} bytes"),
        other => tracing::info!(event = ?other, "mixed precision"),
    })
    .with_context(|| format!("stage `{stage}`: mixed precision"))?;
    pb.finish_and_clear();
    qat_pb.finish_and_clear();
    let (mut mixed, report, qat_report) = (
        stage_out.checkpoint,
        stage_out.report.mixed,
        stage_out.report.qat,
    );
    mixed.provenance.stage = stage.into();
    mixed.provenance.parent_sha256 = Some(input.sha256.clone());
    mixed.provenance.config_hash = Some(fingerprint.into());
    // The budget holds for the file as written: provenance and tokenizer reference included.
    let mixed = save_with_tokenizer(&input.loaded, mixed, &out, |c| {
        check_budget(c, limit).with_context(|| format!("stage `{stage}`"))?;
        Ok(())
    })?;
    let m = measure(&ctx.cfg.data, &input, &mixed, &out)?;
    let reference = reference_ppl(ctx, &c.reference);
    println!(
        "  [{stage}] budget {}: {} bytes, PPL {:.4} (predicted {}){}",
        report.budget.label(),
        m.file_bytes,
        m.ppl.ppl,
        report
            .predicted_ppl
            .map_or("-".into(), |p| format!("{p:.4}")),
        reference
            .map(|r| format!(
                ", Δ {:+.2} % vs F32 baseline",
                100.0 * (m.ppl.ppl / r - 1.0)
            ))
            .unwrap_or_default()
    );
    let svg_path = ctx
        .cfg
        .run
        .report_dir
        .join(format!("{}_mixed_frontier.svg", ctx.cfg.run.name));
    fsutil::atomic_write(&svg_path, frontier_svg(&report).as_bytes())?;
    let seconds = t0.elapsed().as_secs_f64();
    let command = format!(
        "cargo xtask mixed --checkpoint {} --out {} {}",
        input.loaded.path.display(),
        out.display(),
        match report.budget {
            squish_mixed::Budget::Bytes(n) => format!("--budget-bytes {n}"),
            squish_mixed::Budget::BitsPerParam(b) => format!("--budget-bpp {b}"),
            squish_mixed::Budget::MaxDppl(p) => format!("--max-dppl {p}"),
        }
    );
    let json = json!({
        "stage": stage,
        "command": command,
        "fingerprint": fingerprint,
        "inputs": {"checkpoint": {"path": input.loaded.path, "sha256": input.sha256}, "corpus": input.corpus},
        "summary": summary(&m, &input.eval, reference, seconds),
        "frontier": report.frontier,
        "mixed": report,
        "qat": qat_report,
        "frontier_svg": svg_path,
        "settings": c,
    });
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    let mut md = format!(
        "# Stage `{stage}` — mixed precision of `{}`\n\n| what | value |\n|---|---|\n{}| budget | {} |\n| bits/param (of the input's parameters) | {:.3} |\n| predicted PPL / measured (squish-mixed) | {} / {} (error {}) |\n| additivity correction α | {} |\n| proxy Spearman ρ vs KL | {:.3} |\n| sensitivity | {} ({:.1} s) |\n\n## Formats chosen\n\n| format | tensors |\n|---|---|\n",
        c.input,
        summary_md(&m, &input.eval, reference),
        report.budget.label(),
        report.bits_per_param,
        f(report.predicted_ppl),
        f(report.measured_ppl),
        report
            .prediction_error_pct
            .map_or("-".into(), |e| format!("{e:+.2} %")),
        f(report.correction),
        report.proxy.spearman_kl,
        if report.cache_hit {
            "cache hit"
        } else {
            "measured"
        },
        report.sensitivity_seconds
    );
    for (k, n) in report.format_counts() {
        md.push_str(&format!("| {k} | {n} |\n"));
    }
    md.push_str("\n## Frontier (bytes vs PPL)\n\n| point | kind | file bytes | bits/param | predicted PPL | measured PPL |\n|---|---|---|---|---|---|\n");
    for p in &report.frontier {
        md.push_str(&format!(
            "| {} | {:?} | {} | {:.3} | {} | {} |\n",
            p.label,
            p.kind,
            p.file_bytes,
            p.bits_per_param,
            f(p.corrected_ppl.or(p.predicted_ppl)),
            f(p.measured_ppl)
        ));
    }
    md.push_str(&format!(
        "\n![frontier]({})\n\n## Per tensor\n\n| tensor | format | bytes |\n|---|---|---|\n",
        svg_path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    ));
    for t in &report.tensors {
        md.push_str(&format!("| {} | {} | {} |\n", t.name, t.format, t.bytes));
    }
    md.push_str(&format!("\nCommand: `{command}`\n"));
    if let Some(q) = &c.qat {
        md.push_str(&format!(
            "\nThe chosen mix was then fine-tuned by QAT ({} steps, batch {} × {}, distill α {}) with exactly these formats; the file bytes, PPL and sample above are of the QAT export. The frontier's measured PPLs are post-training (no QAT).\n",
            q.train.steps, q.train.batch_size, q.train.seq_len, q.train.distill_alpha
        ));
    }
    md.push_str(&sample_md(&ctx.cfg.data, &m));
    Ok((json, md, vec![svg_path]))
}
