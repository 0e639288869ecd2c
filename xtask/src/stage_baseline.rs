//! Pipeline stage `baseline`, display side: the stage itself is `squish_core::baseline::run`;
//! this file shows its progress and writes its report.

use anyhow::Result;
use serde_json::json;
use squish_core::baseline::{BaselineEvent, BaselineResult, BaselineStage};
use squish_core::fsutil;
use std::path::Path;

use crate::common::progress_bar;

/// Runs `squish_core::baseline::run` with a progress bar.
pub fn run(cfg: &BaselineStage, out: &Path, fingerprint: &str) -> Result<BaselineResult> {
    let pb = progress_bar(cfg.train.steps as u64, "train");
    let r = squish_core::baseline::run(cfg, out, fingerprint, &mut |e| match e {
        BaselineEvent::Prepared {
            parameters,
            train_tokens,
            stories,
            valid_tokens,
            origin,
        } => println!(
            "  [baseline] SsmMoe with {parameters} parameters; {train_tokens} training tokens in {stories} stories, {valid_tokens} validation tokens ({origin})"
        ),
        BaselineEvent::Train(p) => {
            pb.set_position(p.step as u64);
            let v = p
                .valid_nats
                .map(|v| format!(" valid {v:.3}"))
                .unwrap_or_default();
            pb.set_message(format!("loss {:.3}{v} {:.0} tok/s", p.loss, p.tokens_per_s));
            if p.valid_nats.is_some() {
                tracing::info!(step = p.step, loss = p.loss, valid = p.valid_nats, "train");
            }
        }
    });
    pb.finish_and_clear();
    Ok(r?)
}

/// The report of the stage: (JSON, Markdown).
pub fn report(
    r: &BaselineResult,
    cfg: &BaselineStage,
    fingerprint: &str,
) -> Result<(serde_json::Value, String)> {
    let warn = if r.corpus.generated {
        "\n> **WARNING: no TinyStories corpus was found; these numbers are on squish's GENERATED stories, not on TinyStories.**\n"
    } else {
        ""
    };
    let json = json!({
        "stage": "baseline",
        "command": "cargo xtask pipeline --only baseline",
        "fingerprint": fingerprint,
        "inputs": {"train": {"path": r.corpus.train, "sha256": fsutil::sha256_file(&r.corpus.train)?, "stories": r.stories}, "valid": {"path": r.corpus.valid, "sha256": fsutil::sha256_file(&r.corpus.valid)?}, "corpus_origin": r.corpus.origin, "generated_corpus": r.corpus.generated},
        "eval_text": r.eval_text,
        "output": {"path": r.checkpoint, "sha256": fsutil::sha256_file(&r.checkpoint)?, "bytes": r.file_bytes},
        "parameters": r.parameters,
        "perplexity": r.ppl,
        "unigram_nats_per_token": r.unigram_nats,
        "nats_better_than_unigram": r.unigram_nats - r.ppl.nats_per_token,
        "train_seconds": r.train_seconds,
        "train_tokens_per_s": r.tokens_per_s,
        "curve": r.curve,
        "greedy_sample": r.sample,
        "settings": cfg,
    });
    let mut md = format!(
        "# Stage `baseline` — SsmMoe trained from scratch\n{warn}\n| what | value |\n|---|---|\n| parameters | {} |\n| file bytes (F32) | {} |\n| validation PPL (llama-cpp, ctx {}) | {:.4} |\n| nats/token | {:.4} |\n| unigram nats/token (same tokenizer) | {:.4} |\n| better than unigram by | {:.3} nats/token |\n| training time | {:.0} s ({:.0} tokens/s) |\n| corpus | {} ({} training stories, each BOS-first) |\n| evaluation text | {} |\n\n## Validation loss over training\n\n| step | train loss | valid nats/token |\n|---|---|---|\n",
        r.parameters,
        r.file_bytes,
        r.ppl.ctx,
        r.ppl.ppl,
        r.ppl.nats_per_token,
        r.unigram_nats,
        r.unigram_nats - r.ppl.nats_per_token,
        r.train_seconds,
        r.tokens_per_s,
        r.corpus.origin,
        r.stories,
        r.eval_text.describe()
    );
    for p in r.curve.iter().filter(|p| p.valid_nats.is_some()) {
        md.push_str(&format!(
            "| {} | {:.4} | {:.4} |\n",
            p.step,
            p.loss,
            p.valid_nats.unwrap_or(f64::NAN)
        ));
    }
    md.push_str(&format!("\n## Greedy sample\n\n```\n{}\n```\n", r.sample));
    Ok((json, md))
}
