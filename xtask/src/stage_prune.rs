//! Pipeline stage `pruned`: structured pruning of another stage's F32 checkpoint by
//! squish-prune's stage ([`squish_prune::run`]: dependency groups, importance, allocation,
//! recovery by distillation), then optionally prune → INT4 by squish-quant's stage; both measured
//! by the native runtime.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use squish_core::tokenizer::Tokenizer;
use squish_prune::{PruneConfig, PruneData, PruneEvent, PruneInput};
use squish_quant::QuantSettings;

use crate::common::progress_bar;
use crate::pipeline::Ctx;
use crate::stage_data::{
    StageInput, load_input, reference_ppl, sample_md, save_and_measure, summary, summary_md,
};
use crate::stage_quant::{quant_command, quantize_and_measure};

/// `[stages.pruned]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PruneStage {
    /// The stage whose (F32) checkpoint is pruned.
    pub input: String,
    /// The stage whose PPL is the F32 reference for ΔPPL.
    #[serde(default = "crate::stage_data::default_reference")]
    pub reference: String,
    /// squish-prune settings (`[stages.pruned.prune]`, `[stages.pruned.prune.recover]`).
    pub prune: PruneConfig,
    /// Also quantize the pruned model (`[stages.pruned.int4]`), written to `pruned/int4/`.
    #[serde(default)]
    pub int4: Option<QuantSettings>,
}

/// The pruning stage's input: the stage input's checkpoint and tokens.
pub fn prune_input(input: &StageInput) -> PruneInput<'_> {
    PruneInput {
        ckpt: &input.loaded.ckpt,
        data: PruneData {
            calib: &input.calib,
            train: &input.train,
            valid: &input.valid,
            bos: input.loaded.tokenizer.bos_id(),
        },
    }
}

/// Runs the stage: (JSON, Markdown, extra output files).
pub fn run(
    ctx: &Ctx,
    stage: &str,
    c: &PruneStage,
    fingerprint: &str,
) -> Result<(serde_json::Value, String, Vec<std::path::PathBuf>)> {
    let t0 = std::time::Instant::now();
    let input = load_input(ctx, &c.input)?;
    let out = ctx.checkpoint_path(stage);
    let steps = c.prune.recover.as_ref().map_or(0, |r| r.steps) * c.prune.rounds;
    let pb = progress_bar(steps as u64, "recover");
    let mut done = 0u64;
    let pruned = squish_prune::run(&prune_input(&input), &c.prune, &mut |e| match e {
        PruneEvent::RoundStart { round, rounds, .. } => {
            pb.set_message(format!("round {round}/{rounds}"));
        }
        PruneEvent::Pruned { round, params } => {
            tracing::info!(round, params, "pruned");
        }
        PruneEvent::Train { round, point } => {
            done += 1;
            pb.set_position(done);
            pb.set_message(format!("round {round} loss {:.3}", point.loss));
        }
        PruneEvent::Valid { round, when, nats } => {
            tracing::info!(round, when, nats, "validation");
        }
    })
    .with_context(|| format!("stage `{stage}`: pruning"))?;
    pb.finish_and_clear();
    let (mut pruned, report) = (pruned.checkpoint, pruned.report);
    pruned.provenance.stage = stage.into();
    pruned.provenance.parent_sha256 = Some(input.sha256.clone());
    pruned.provenance.config_hash = Some(fingerprint.into());
    let (pruned, m) = save_and_measure(&ctx.cfg.data, &input, pruned, &out)?;
    let reference = reference_ppl(ctx, &c.reference);
    println!(
        "  [{stage}] {} → {} parameters ({:.1} % of non-embedding removed), PPL {:.4}{}",
        report.params_before,
        report.params_after,
        100.0 * report.achieved_ratio,
        m.ppl.ppl,
        reference
            .map(|r| format!(" (Δ {:+.2} %)", 100.0 * (m.ppl.ppl / r - 1.0)))
            .unwrap_or_default()
    );
    let seconds = t0.elapsed().as_secs_f64();
    let mut extra = Vec::new();
    let mut int4_json = serde_json::Value::Null;
    let mut int4_md = String::new();
    if let Some(q) = &c.int4 {
        let qout = out
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("int4")
            .join("model.safetensors");
        let (qr, qm) =
            quantize_and_measure(ctx, &input, &pruned, &m.sha256, q, stage, &qout, reference)?;
        println!(
            "  [{stage}] + {}: {} bytes, PPL {:.4}",
            q.method.name(),
            qm.file_bytes,
            qm.ppl.ppl
        );
        int4_md = format!(
            "\n## Pruned → {} ({})\n\n| what | value |\n|---|---|\n{}\nCommand: `{}`\n",
            qr.method,
            qout.display(),
            summary_md(&qm, &input.eval, reference),
            quant_command(q, &out, &qout)
        );
        int4_json =
            json!({"summary": summary(&qm, &input.eval, reference, 0.0), "quantization": qr});
        extra.extend(crate::common::checkpoint_files(&qout)?);
    }
    let command = format!(
        "cargo xtask prune --checkpoint {} --out {} --ratio {} --importance {}",
        input.loaded.path.display(),
        out.display(),
        c.prune.ratio,
        serde_json::to_value(c.prune.importance)?
            .as_str()
            .unwrap_or("?")
    );
    let mut json = json!({
        "stage": stage,
        "command": command,
        "fingerprint": fingerprint,
        "inputs": {"checkpoint": {"path": input.loaded.path, "sha256": input.sha256}, "corpus": input.corpus},
        "summary": summary(&m, &input.eval, reference, seconds),
        "pruning": report,
        "settings": c,
    });
    if !int4_json.is_null() {
        json["int4_summary"] = int4_json["summary"].clone();
        json["int4_quantization"] = int4_json["quantization"].clone();
    }
    let mut md = format!(
        "# Stage `{stage}` — structured pruning of `{}`\n\n| what | value |\n|---|---|\n{}| parameters before → after | {} → {} |\n| non-embedding removed | {:.1} % (requested {:.1} %) |\n| importance / allocation | {:?} / {:?} |\n| targets | {:?} |\n| recovery per round | {} tokens |\n\n## Rounds\n\n| round | non-embedding params | valid nats before recovery | after recovery | seconds |\n|---|---|---|---|---|\n",
        c.input,
        summary_md(&m, &input.eval, reference),
        report.params_before,
        report.params_after,
        100.0 * report.achieved_ratio,
        100.0 * report.requested_ratio,
        report.importance,
        report.allocation,
        report.targets,
        report.recovery_tokens_per_round,
    );
    for r in &report.rounds {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} |\n",
            r.round,
            r.non_embedding_params,
            f(r.valid_nats_before_recovery),
            f(r.valid_nats_after_recovery),
            r.seconds
        ));
    }
    md.push_str("\n## Widths after pruning\n\n| dimension | before | after |\n|---|---|---|\n");
    for (k, after) in &report.widths_after {
        md.push_str(&format!(
            "| {k} | {} | {after} |\n",
            report.widths_before.get(k).copied().unwrap_or(0)
        ));
    }
    md.push_str(&format!("\nCommand: `{command}`\n"));
    md.push_str(&int4_md);
    md.push_str(&sample_md(&ctx.cfg.data, &m));
    Ok((json, md, extra))
}
