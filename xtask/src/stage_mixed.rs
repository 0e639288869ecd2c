//! Pipeline stage `mixed_precision`: per-tensor formats for another stage's F32 checkpoint,
//! chosen by squish-mixed from measured sensitivity under a byte budget; the Pareto frontier as
//! SVG; measured by the native runtime.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::json;
use squish_core::fsutil;
use squish_core::tokenizer::Tokenizer;
use squish_mixed::{MixedConfig, MixedData, MixedEvent, frontier_svg, mixed_checkpoint};

use crate::common::progress_bar;
use crate::pipeline::Ctx;
use crate::stage_data::{
    load_input, reference_ppl, sample_md, save_and_measure, summary_json, summary_md,
};
use crate::stage_quant::{QatSettings, calibrate, run_qat};
use std::collections::BTreeMap;

/// `[stages.mixed_precision]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MixedStage {
    /// The stage whose (F32) checkpoint gets mixed formats.
    pub input: String,
    /// The stage whose PPL is the F32 reference for ΔPPL.
    #[serde(default = "crate::stage_data::default_reference")]
    pub reference: String,
    /// squish-mixed settings (`[stages.mixed_precision.mixed]`); the sensitivity cache defaults
    /// to the stage's checkpoint directory.
    pub mixed: MixedConfig,
    /// QAT of the chosen per-tensor formats (`[stages.mixed_precision.qat]`): fine-tunes the
    /// latent F32 weights through fake-quant with exactly the mix's formats, then exports them.
    #[serde(default)]
    pub qat: Option<QatSettings>,
}

/// The QAT plan of a mix: every 2-D tensor's chosen format (`None` = kept as float).
fn qat_plan(
    ckpt: &squish_core::checkpoint::Checkpoint,
    report: &squish_mixed::MixedReport,
) -> Result<BTreeMap<String, Option<squish_quant::QuantFormat>>> {
    let mut plan = BTreeMap::new();
    for t in &report.tensors {
        let is_2d = ckpt
            .weights
            .get(&t.name)
            .map(|w| w.shape.len() == 2)
            .unwrap_or(false);
        if is_2d {
            let f = squish_mixed::CandidateFormat::parse(&t.format)?.quant_format()?;
            plan.insert(t.name.clone(), f);
        }
    }
    Ok(plan)
}

/// Bytes kept free in the solve for the QAT export's provenance entry.
const QAT_RESERVE_BYTES: u64 = 128;

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
    let mut cfg = c.mixed.clone();
    if cfg.cache_dir.is_none() {
        cfg.cache_dir = out.parent().map(|p| p.join("sensitivity"));
    }
    // The QAT export carries one more provenance entry than the plain mix: solve under a budget
    // that leaves room for it, and check the real file against the configured one below.
    let params = input.loaded.ckpt.weights.param_count();
    let limit = c.mixed.budget.byte_limit(params);
    if let (Some(n), Some(_)) = (limit, &c.qat) {
        cfg.budget = squish_mixed::Budget::Bytes(n.saturating_sub(QAT_RESERVE_BYTES));
    }
    let stats = if cfg.gptq {
        Some(calibrate(&input, &input.loaded.ckpt)?)
    } else {
        None
    };
    let data = MixedData {
        calib: &input.calib,
        valid: &input.valid,
        bos: input.loaded.tokenizer.bos_id(),
    };
    let pb = progress_bar(0, "sensitivity");
    let (mut mixed, report) = mixed_checkpoint(
        &input.loaded.ckpt,
        &cfg,
        &data,
        stats.as_ref(),
        &mut |e| match e {
            MixedEvent::Sensitivity { done, total, .. } => {
                pb.set_length(*total as u64);
                pb.set_position(*done as u64);
            }
            MixedEvent::CacheHit { path } => {
                tracing::info!(path = %path.display(), "sensitivity cache hit");
            }
            other => tracing::info!(event = ?other, "mixed precision"),
        },
    )?;
    pb.finish_and_clear();
    let mut qat_report = None;
    if let Some(q) = &c.qat {
        let plan = qat_plan(&input.loaded.ckpt, &report)?;
        let mut quant = squish_quant::QuantConfig::new(
            squish_quant::QuantFormat::new(4, Some(64), false)?,
            squish_quant::Method::Rtn,
        );
        quant.small = if cfg.small_f16 {
            squish_quant::SmallFormat::F16
        } else {
            squish_quant::SmallFormat::F32
        };
        let plain_bytes = squish_core::checkpoint::to_bytes(&mixed)?.len();
        let (mut qat, qr) = run_qat(&input, &input.loaded.ckpt, quant, plan, q)?;
        let mut prov = mixed.provenance.clone();
        prov.details.insert(
            "qat".into(),
            format!(
                "{} steps, distill α {}",
                q.train.steps, q.train.distill_alpha
            ),
        );
        qat.provenance = prov;
        let qat_bytes = squish_core::checkpoint::to_bytes(&qat)?.len();
        println!("  [{stage}] QAT of the chosen mix: {plain_bytes} → {qat_bytes} bytes");
        mixed = qat;
        qat_report = Some(qr);
    }
    mixed.provenance.stage = stage.into();
    mixed.provenance.parent_sha256 = Some(input.sha256.clone());
    mixed.provenance.config_hash = Some(fingerprint.into());
    if let Some(n) = limit {
        let bytes = squish_core::checkpoint::to_bytes(&mixed)?.len() as u64;
        anyhow::ensure!(
            bytes <= n,
            "mixed_precision: the checkpoint is {bytes} bytes, over the budget of {n} bytes"
        );
    }
    let (_, m) = save_and_measure(&ctx.cfg.data, &input, mixed, &out)?;
    let reference = reference_ppl(ctx, &c.reference);
    println!(
        "  [{stage}] budget {}: {} bytes, PPL {:.4} (predicted {}){}",
        cfg.budget.label(),
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
        match cfg.budget {
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
        "summary": summary_json(&m, reference, seconds),
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
        summary_md(&m, reference),
        cfg.budget.label(),
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
