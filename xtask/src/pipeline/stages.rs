//! The stages the pipeline knows: their fingerprints and what they run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;
use squish_core::fsutil;

use super::Ctx;
use crate::report::write_report;
use crate::stage_data::{corpus_fingerprint, input_fingerprint, load_input, measure, summary_json};

/// A stage's checkpoint and tokenizer plus `reports`: the files it leaves behind.
fn checkpoint_outputs(ctx: &Ctx, stage: &str, reports: Vec<PathBuf>) -> Vec<PathBuf> {
    let ckpt = ctx.checkpoint_path(stage);
    let tok = ckpt
        .parent()
        .unwrap_or(Path::new("."))
        .join("tokenizer.bin");
    let mut v = vec![ckpt, tok];
    v.extend(reports);
    v
}

/// The native-runtime summary block of a stage's own checkpoint (import / baseline).
fn own_summary(ctx: &Ctx, stage: &str, seconds: f64) -> Result<serde_json::Value> {
    let input = load_input(ctx, stage)?;
    let m = measure(
        &ctx.cfg.data,
        &input,
        &input.loaded.ckpt,
        &input.loaded.path,
    )?;
    Ok(summary_json(&m, Some(m.ppl.ppl), seconds))
}

fn file_hash(p: &Path) -> Result<String> {
    fsutil::sha256_file(p).with_context(|| format!("hashing input {}", p.display()))
}

/// The hash of a stage's settings and input files.
pub fn fingerprint(ctx: &Ctx, stage: &str) -> Result<String> {
    let s = &ctx.cfg.stages;
    let v = match stage {
        "import" => {
            let c = s.import.as_ref().expect("validated");
            json!({"settings": c, "model": file_hash(&c.model)?, "tokenizer": file_hash(&c.tokenizer)?, "report": 2, "data": ctx.cfg.data})
        }
        "eval" => {
            let c = s.eval.as_ref().expect("validated");
            let input = ctx.checkpoint_path(&c.input);
            let input_hash = if input.is_file() {
                file_hash(&input)?
            } else {
                "not yet built".into()
            };
            json!({"settings": c, "input": input_hash, "data": file_hash(&c.data)?})
        }
        // The machine is the input: its CPU model and detected SIMD features.
        "diagnostics" => {
            json!({"settings": s.diagnostics, "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(String::from)), "simd": squish_hwdiag::detect_features()})
        }
        "baseline" => {
            let c = s.baseline.as_ref().expect("validated");
            let corpus = match &c.data_dir {
                Some(d) => {
                    json!({"train": file_hash(&d.join("train.txt"))?, "valid": file_hash(&d.join("valid.txt"))?})
                }
                None => match squish_core::data::locate_corpus_readonly() {
                    Some((t, v)) => json!({"train": file_hash(&t)?, "valid": file_hash(&v)?}),
                    None => json!("generated"),
                },
            };
            json!({"settings": c, "corpus": corpus, "report": 2})
        }
        "int4_native" => {
            let c = s.int4_native.as_ref().expect("validated");
            json!({"settings": c, "input": input_fingerprint(ctx, &c.input)?, "corpus": corpus_fingerprint(ctx)?})
        }
        "pruned" => {
            let c = s.pruned.as_ref().expect("validated");
            json!({"settings": c, "input": input_fingerprint(ctx, &c.input)?, "corpus": corpus_fingerprint(ctx)?})
        }
        "mixed_precision" => {
            let c = s.mixed_precision.as_ref().expect("validated");
            json!({"settings": c, "input": input_fingerprint(ctx, &c.input)?, "corpus": corpus_fingerprint(ctx)?})
        }
        "kernels" => {
            let c = s.kernels.as_ref().expect("validated");
            let mut inputs = serde_json::Map::new();
            for i in ctx.cfg.inputs_of("kernels") {
                inputs.insert(i.clone(), json!(input_fingerprint(ctx, &i)?));
            }
            json!({"settings": c, "inputs": inputs, "simd": squish_hwdiag::detect_features()})
        }
        "final_report" => {
            let c = s.final_report.as_ref().expect("validated");
            let mut inputs = serde_json::Map::new();
            let mut names = ctx.cfg.inputs_of("final_report");
            names.push(c.kernels.clone());
            for i in names {
                let (pj, _) = ctx.report_paths(&i);
                let h = if pj.is_file() {
                    file_hash(&pj)?
                } else {
                    "not yet built".into()
                };
                inputs.insert(i, json!(h));
            }
            json!({"settings": c, "reports": inputs})
        }
        other => bail!("unknown stage `{other}`"),
    };
    let v = json!({"stage": stage, "tool": env!("CARGO_PKG_VERSION"), "inputs": v});
    Ok(fsutil::sha256_hex(serde_json::to_string(&v)?.as_bytes()))
}

/// Runs `stage`; returns the files it wrote.
pub fn run_stage(ctx: &Ctx, stage: &str, fingerprint: &str) -> Result<Vec<PathBuf>> {
    match stage {
        "import" => import(ctx, fingerprint),
        "eval" => eval(ctx, fingerprint),
        "baseline" => baseline(ctx, fingerprint),
        "int4_native" => {
            let c = ctx.cfg.stages.int4_native.as_ref().expect("validated");
            let (json, md) = crate::stage_quant::run(ctx, stage, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            Ok(checkpoint_outputs(ctx, stage, vec![rj, rm]))
        }
        "pruned" => {
            let c = ctx.cfg.stages.pruned.as_ref().expect("validated");
            let (json, md, extra) = crate::stage_prune::run(ctx, stage, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            let mut out = checkpoint_outputs(ctx, stage, vec![rj, rm]);
            out.extend(extra);
            Ok(out)
        }
        "mixed_precision" => {
            let c = ctx.cfg.stages.mixed_precision.as_ref().expect("validated");
            let (json, md, extra) = crate::stage_mixed::run(ctx, stage, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            let mut out = checkpoint_outputs(ctx, stage, vec![rj, rm]);
            out.extend(extra);
            Ok(out)
        }
        "kernels" => {
            let c = ctx.cfg.stages.kernels.as_ref().expect("validated");
            let (json, md) = crate::stage_kernels::run(ctx, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            Ok(vec![rj, rm])
        }
        "final_report" => {
            let c = ctx.cfg.stages.final_report.as_ref().expect("validated");
            let (json, md, mut extra) = crate::stage_final::run(ctx, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            println!("  [final_report] {}", rm.display());
            extra.extend([rj, rm]);
            Ok(extra)
        }
        "diagnostics" => {
            let c = ctx.cfg.stages.diagnostics.clone().unwrap_or_default();
            let (r, files) =
                crate::cmd_diagnose::stage(&c, &ctx.cfg.run.report_dir, &ctx.cfg.run.name)?;
            println!(
                "  [diagnostics] SIMD path {}, {} recommended thread(s), overall {:?}",
                r.recommendations.simd_level.as_str(),
                r.recommendations.threads,
                r.assessment.overall
            );
            Ok(files)
        }
        other => bail!("unknown stage `{other}`"),
    }
}

fn import(ctx: &Ctx, fingerprint: &str) -> Result<Vec<PathBuf>> {
    let c = ctx.cfg.stages.import.as_ref().expect("validated");
    let out = ctx.checkpoint_path("import");
    let ckpt = crate::cmd_import::import(&c.model, &c.tokenizer, &out, "import")?;
    let bytes = std::fs::metadata(&out)?.len();
    let params = ckpt.weights.param_count();
    let json = json!({
        "stage": "import",
        "command": format!("cargo xtask import-llama2c --model {} --tokenizer {} --out {}", c.model.display(), c.tokenizer.display(), out.display()),
        "inputs": {"model": {"path": c.model, "sha256": file_hash(&c.model)?}, "tokenizer": {"path": c.tokenizer, "sha256": file_hash(&c.tokenizer)?}},
        "fingerprint": fingerprint,
        "output": {"path": out, "sha256": file_hash(&out)?, "bytes": bytes},
        "parameters": params,
        "config": ckpt.config,
        "summary": own_summary(ctx, "import", 0.0)?,
    });
    let md = format!(
        "# Stage `import`\n\nImported `{}` (llama2.c v0) with tokenizer `{}`.\n\n| what | value |\n|---|---|\n| parameters | {params} |\n| file bytes | {bytes} |\n| output | `{}` |\n| sha256 | `{}` |\n\nCommand: `{}`\n",
        c.model.display(),
        c.tokenizer.display(),
        out.display(),
        json["output"]["sha256"].as_str().unwrap_or(""),
        json["command"].as_str().unwrap_or("")
    );
    let (rj, rm) = write_report(ctx, "import", &json, &md)?;
    let tok = out.parent().unwrap_or(Path::new(".")).join("tokenizer.bin");
    Ok(vec![out, tok, rj, rm])
}

fn eval(ctx: &Ctx, fingerprint: &str) -> Result<Vec<PathBuf>> {
    let c = ctx.cfg.stages.eval.as_ref().expect("validated");
    let input = ctx.checkpoint_path(&c.input);
    if !input.is_file() {
        bail!(
            "the checkpoint of stage `{}` ({}) does not exist; run that stage first",
            c.input,
            input.display()
        );
    }
    let r = crate::cmd_eval::evaluate(
        &input,
        &c.data,
        c.ctx,
        &c.protocol,
        c.batch,
        &c.backend,
        true,
    )?;
    let command = format!(
        "cargo xtask eval --checkpoint {} --data {} --ctx {} --protocol {} --json",
        input.display(),
        c.data.display(),
        c.ctx,
        c.protocol
    );
    let json = json!({
        "stage": "eval",
        "command": command,
        "inputs": {"checkpoint": {"path": input, "sha256": file_hash(&input)?}, "data": {"path": c.data, "sha256": file_hash(&c.data)?}},
        "fingerprint": fingerprint,
        "engine": format!("burn ({})", c.backend),
        "perplexity": r,
    });
    let md = format!(
        "# Stage `eval`\n\n| metric | value |\n|---|---|\n| PPL | {:.4} |\n| nats/token | {:.5} |\n| scored tokens | {} |\n| chunks × ctx | {} × {} |\n| protocol | {} |\n\nCheckpoint `{}` on `{}`.\n\nCommand: `{command}`\n",
        r.ppl,
        r.nats_per_token,
        r.tokens,
        r.chunks,
        r.ctx,
        r.protocol,
        input.display(),
        c.data.display()
    );
    println!(
        "  [eval] PPL {:.4} ({:.5} nats/token, {} tokens)",
        r.ppl, r.nats_per_token, r.tokens
    );
    let (rj, rm) = write_report(ctx, "eval", &json, &md)?;
    Ok(vec![rj, rm])
}

fn baseline(ctx: &Ctx, fingerprint: &str) -> Result<Vec<PathBuf>> {
    let c = ctx.cfg.stages.baseline.as_ref().expect("validated");
    let out = ctx.checkpoint_path("baseline");
    let r = crate::stage_baseline::run(c, &out, fingerprint)?;
    println!(
        "  [baseline] {} parameters, PPL {:.4} ({:.4} nats/token; unigram {:.4}), trained in {:.0} s",
        r.parameters, r.ppl.ppl, r.ppl.nats_per_token, r.unigram_nats, r.train_seconds
    );
    let (mut json, md) = crate::stage_baseline::report(&r, c, fingerprint)?;
    json["summary"] = own_summary(ctx, "baseline", r.train_seconds)?;
    let (rj, rm) = write_report(ctx, "baseline", &json, &md)?;
    let tok = out.parent().unwrap_or(Path::new(".")).join("tokenizer.bin");
    Ok(vec![out, tok, rj, rm])
}
