//! Pipeline stage `baseline`: train a byte-fallback BPE tokenizer and an SsmMoe model on
//! TinyStories (or, with no corpus, on squish's generated stories — said loudly), then measure it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use squish_core::checkpoint::{self, Checkpoint, Provenance};
use squish_core::config::{ModelConfig, SsmMoeConfig};
use squish_core::data::{
    Corpus, EvalMode, EvalText, locate_corpus, read_stories, story_tokens, train_story_tokenizer,
};
use squish_core::eval::perplexity;
use squish_core::fsutil;
use squish_core::generate::generate;
use squish_core::model::CpuBackend;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_step::SsmMoeStepper;
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::sample::Sampler;
use squish_core::tokenizer::Tokenizer;
use squish_core::train::{TrainConfig, TrainPoint, train};

use crate::common::progress_bar;

/// `[stages.baseline]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineStage {
    /// Directory with train.txt/valid.txt (else `$SQUISH_DATA`, else ../shared/data/tinystories,
    /// else a generated corpus).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Tokenizer vocabulary size.
    pub vocab_size: usize,
    /// Seed of initialisation and batch sampling.
    pub seed: u64,
    /// Scan formulation for training.
    pub scan: ScanMode,
    /// burn backend.
    #[serde(default)]
    pub backend: CpuBackend,
    /// Evaluation context.
    #[serde(default = "default_ctx")]
    pub eval_ctx: usize,
    /// Evaluate on only the first this-many bytes of the evaluation text (smoke runs); the
    /// default, none, is the whole text.
    #[serde(default)]
    pub eval_limit_bytes: Option<usize>,
    /// The evaluation text: the validation stories joined by blank lines (`stories`, the
    /// default) or the file as it is (`raw`).
    #[serde(default, skip_serializing_if = "is_stories")]
    pub eval_mode: EvalMode,
    /// Tokens of the greedy sample in the report.
    #[serde(default = "default_sample")]
    pub sample_tokens: usize,
    /// Model hyper-parameters.
    pub model: SsmMoeConfig,
    /// Training hyper-parameters.
    pub train: TrainConfig,
}

fn is_stories(m: &EvalMode) -> bool {
    *m == EvalMode::Stories
}
fn default_ctx() -> usize {
    256
}
fn default_sample() -> usize {
    160
}

/// What the baseline stage measured.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineResult {
    pub checkpoint: PathBuf,
    pub corpus: Corpus,
    pub eval_text: EvalText,
    pub stories: usize,
    pub parameters: usize,
    pub file_bytes: u64,
    pub ppl: squish_core::eval::PerplexityReport,
    pub unigram_nats: f64,
    pub curve: Vec<TrainPoint>,
    pub sample: String,
    pub train_seconds: f64,
    pub tokens_per_s: f64,
}

/// Unigram model of the training tokens (add-one smoothed), scored on exactly the tokens the
/// `llama-cpp` protocol scores.
pub fn unigram_nats(train: &[u32], valid: &[u32], vocab: usize, ctx: usize) -> f64 {
    let mut counts = vec![1.0f64; vocab];
    for &t in train {
        counts[t as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let (mut nll, mut n) = (0.0, 0usize);
    for chunk in valid.chunks_exact(ctx) {
        for j in ctx / 2..ctx - 1 {
            nll -= (counts[chunk[j + 1] as usize] / total).ln();
            n += 1;
        }
    }
    nll / n.max(1) as f64
}

/// Greedy text from `model` after `prompt`.
pub fn greedy_sample(
    model: &SsmMoe,
    tok: &dyn Tokenizer,
    prompt: &str,
    steps: usize,
) -> Result<String> {
    let mut out = Vec::new();
    let mut stepper = SsmMoeStepper::new(model);
    generate(
        &mut stepper,
        tok,
        prompt,
        steps,
        &mut Sampler::new(0.0, 0.9, 1),
        |p| out.extend_from_slice(p),
    )?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Runs the stage, writing the checkpoint (+ its content-named tokenizer) to `out`.
pub fn run(cfg: &BaselineStage, out: &Path, fingerprint: &str) -> Result<BaselineResult> {
    let corpus = locate_corpus(
        cfg.data_dir.as_deref(),
        &out.parent().unwrap_or(Path::new(".")).join("corpus"),
    )?;
    // Stories, not a stream: the `<|endoftext|>` separators never reach the tokenizer trainer
    // or the model; every story starts with BOS, so the model learns where a story ends.
    let stories = read_stories(&corpus.train)?;
    let eval_text = EvalText::load(&corpus.valid, cfg.eval_mode, cfg.eval_limit_bytes)?;
    let t0 = std::time::Instant::now();
    let tok = train_story_tokenizer(&stories, cfg.vocab_size).context("training the tokenizer")?;
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "tokenizer trained");
    let tok_bytes = tok.to_bytes();
    let tref = checkpoint::write_tokenizer(&tok_bytes, "llama2c", out)?;
    let train_tokens = story_tokens(&tok, &stories);
    let valid_tokens = eval_text.tokens(&tok);
    let mut model_cfg = cfg.model.clone();
    model_cfg.vocab_size = cfg.vocab_size;

    let weights = init_weights(&model_cfg, cfg.seed)?;
    let device = cfg.backend.autodiff_device();
    let model = SsmMoe::from_weights(&model_cfg, &weights, &device, cfg.scan)?;
    let params = weights.param_count();
    println!(
        "  [baseline] SsmMoe with {params} parameters; {} training tokens in {} stories, {} validation tokens ({})",
        train_tokens.len(),
        stories.len(),
        valid_tokens.len(),
        corpus.origin
    );
    let pb = progress_bar(cfg.train.steps as u64, "train");
    let t1 = std::time::Instant::now();
    let (model, curve) = train(
        model,
        &train_tokens,
        &valid_tokens,
        tok.bos_id(),
        &cfg.train,
        None,
        |p| {
            pb.set_position(p.step as u64);
            let v = p
                .valid_nats
                .map(|v| format!(" valid {v:.3}"))
                .unwrap_or_default();
            pb.set_message(format!("loss {:.3}{v} {:.0} tok/s", p.loss, p.tokens_per_s));
            if p.valid_nats.is_some() {
                tracing::info!(step = p.step, loss = p.loss, valid = p.valid_nats, "train");
            }
        },
    )?;
    pb.finish_and_clear();
    let train_seconds = t1.elapsed().as_secs_f64();
    let weights = model.to_weights()?;

    let mut eval_model = SsmMoe::from_weights(
        &model_cfg,
        &weights,
        &cfg.backend.device(),
        ScanMode::Sequential,
    )?;
    let ppl = perplexity(
        &mut eval_model,
        &valid_tokens,
        cfg.eval_ctx,
        tok.bos_id(),
        8,
        |_, _| {},
    )?;
    let unigram = unigram_nats(&train_tokens, &valid_tokens, cfg.vocab_size, cfg.eval_ctx);
    let sample = greedy_sample(&eval_model, &tok, "Once upon a time", cfg.sample_tokens)?;
    let ckpt = Checkpoint {
        config: ModelConfig::SsmMoe(model_cfg),
        weights,
        provenance: Provenance {
            stage: "baseline".into(),
            parent_sha256: Some(fsutil::sha256_file(&corpus.train)?),
            config_hash: Some(fingerprint.into()),
            tool: format!("squish {}", env!("CARGO_PKG_VERSION")),
            details: BTreeMap::from([
                ("corpus".into(), corpus.origin.clone()),
                ("seed".into(), cfg.seed.to_string()),
            ]),
        },
        metrics: BTreeMap::from([
            ("parameters".into(), params as f64),
            ("ppl".into(), ppl.ppl),
            ("nats_per_token".into(), ppl.nats_per_token),
        ]),
        tokenizer: Some(tref),
    };
    checkpoint::save(&ckpt, out)?;
    let tokens_per_s =
        (cfg.train.steps * cfg.train.batch_size * cfg.train.seq_len) as f64 / train_seconds;
    Ok(BaselineResult {
        checkpoint: out.to_path_buf(),
        corpus,
        eval_text,
        stories: stories.len(),
        parameters: params,
        file_bytes: std::fs::metadata(out)?.len(),
        ppl,
        unigram_nats: unigram,
        curve,
        sample,
        train_seconds,
        tokens_per_s,
    })
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
