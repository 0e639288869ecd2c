//! The stages the pipeline knows: their fingerprints and what they run.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use squish_core::fsutil;

use super::code::CodeTable;
use super::config::Stage;
use super::summary::file_hash;
use super::{Ctx, Fingerprint};
use crate::report::write_report;
use crate::stage_data::{corpus_fingerprint, input_fingerprint};

/// A stage's checkpoint and the tokenizer it names, plus `reports`: the files it leaves behind.
fn checkpoint_outputs(ctx: &Ctx, stage: &str, reports: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut v = crate::common::checkpoint_files(&ctx.checkpoint_path(stage))?;
    v.extend(reports);
    Ok(v)
}

/// The fingerprint of `stage`: the hash of its name, settings, input files and the code it runs
/// (`code`'s hashes of its units, see [`super::code`]; the real table is
/// [`super::code::embedded`], tests pass altered ones).
pub fn fingerprint(ctx: &Ctx, stage: &str, code: &CodeTable) -> Result<Fingerprint> {
    let v = match ctx.cfg.stage(stage)? {
        Stage::Import(c) => {
            json!({"settings": c, "model": file_hash(&c.model)?, "tokenizer": file_hash(&c.tokenizer)?, "data": ctx.cfg.data})
        }
        Stage::Eval(c) => {
            let input = ctx.checkpoint_path(&c.input);
            let input_hash = if input.is_file() {
                file_hash(&input)?
            } else {
                "not yet built".into()
            };
            json!({"settings": c, "input": input_hash, "data": file_hash(&c.data)?})
        }
        // The machine is the input: its CPU model and detected SIMD features.
        Stage::Diagnostics(c) => {
            json!({"settings": c, "cpu": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(String::from)), "simd": squish_hwdiag::detect_features()})
        }
        Stage::Baseline(c) => {
            let corpus = match &c.data_dir {
                Some(d) => {
                    json!({"train": file_hash(&d.join("train.txt"))?, "valid": file_hash(&d.join("valid.txt"))?})
                }
                None => match squish_core::data::locate_corpus_readonly() {
                    Some((t, v)) => json!({"train": file_hash(&t)?, "valid": file_hash(&v)?}),
                    None => json!("generated"),
                },
            };
            json!({"settings": c, "corpus": corpus})
        }
        Stage::Int4Native(c) => {
            json!({"settings": c, "input": input_fingerprint(ctx, &c.input)?, "corpus": corpus_fingerprint(ctx)?})
        }
        Stage::Pruned(c) => {
            json!({"settings": c, "input": input_fingerprint(ctx, &c.input)?, "corpus": corpus_fingerprint(ctx)?})
        }
        Stage::MixedPrecision(c) => {
            let mut v = json!({"settings": c, "input": input_fingerprint(ctx, &c.input)?, "corpus": corpus_fingerprint(ctx)?});
            if let Some(t) = &c.teacher {
                v["teacher"] = json!(input_fingerprint(ctx, t)?);
            }
            v
        }
        Stage::Kernels(c) => {
            let mut inputs = serde_json::Map::new();
            for i in ctx.cfg.inputs_of("kernels") {
                inputs.insert(i.clone(), json!(input_fingerprint(ctx, &i)?));
            }
            json!({"settings": c, "inputs": inputs, "simd": squish_hwdiag::detect_features()})
        }
        Stage::FinalReport(c) => {
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
    };
    let code = code.stage_code(stage)?;
    let full = json!({"stage": stage, "code": code, "inputs": v});
    let inputs = json!({"stage": stage, "inputs": v});
    Ok(Fingerprint {
        full: fsutil::sha256_hex(serde_json::to_string(&full)?.as_bytes()),
        inputs: fsutil::sha256_hex(serde_json::to_string(&inputs)?.as_bytes()),
        code,
    })
}

/// Runs `stage`; returns the files it wrote.
pub fn run_stage(ctx: &Ctx, stage: &str, fingerprint: &str) -> Result<Vec<PathBuf>> {
    match ctx.cfg.stage(stage)? {
        Stage::Import(c) => super::import::import(ctx, c, fingerprint),
        Stage::Eval(c) => super::eval::eval(ctx, c, fingerprint),
        Stage::Baseline(c) => super::baseline::baseline(ctx, c, fingerprint),
        Stage::Int4Native(c) => {
            let (json, md, extra) = crate::stage_quant::run(ctx, stage, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            let mut out = checkpoint_outputs(ctx, stage, vec![rj, rm])?;
            out.extend(extra);
            Ok(out)
        }
        Stage::Pruned(c) => {
            let (json, md, extra) = crate::stage_prune::run(ctx, stage, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            let mut out = checkpoint_outputs(ctx, stage, vec![rj, rm])?;
            out.extend(extra);
            Ok(out)
        }
        Stage::MixedPrecision(c) => {
            let (json, md, extra) = crate::stage_mixed::run(ctx, stage, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            let mut out = checkpoint_outputs(ctx, stage, vec![rj, rm])?;
            out.extend(extra);
            Ok(out)
        }
        Stage::Kernels(c) => {
            let (json, md) = crate::stage_kernels::run(ctx, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            Ok(vec![rj, rm])
        }
        Stage::FinalReport(c) => {
            let (json, md, mut extra) = crate::stage_final::run(ctx, c, fingerprint)?;
            let (rj, rm) = write_report(ctx, stage, &json, &md)?;
            println!("  [final_report] {}", rm.display());
            extra.extend([rj, rm]);
            Ok(extra)
        }
        Stage::Diagnostics(c) => {
            let (r, files) =
                crate::cmd_diagnose::stage(c, &ctx.cfg.run.report_dir, &ctx.cfg.run.name)?;
            println!(
                "  [diagnostics] SIMD path {}, {} recommended thread(s), overall {:?}",
                r.recommendations.simd_level.as_str(),
                r.recommendations.threads,
                r.assessment.overall
            );
            Ok(files)
        }
    }
}
