//! The `baseline` stage: train a byte-fallback BPE tokenizer and an SsmMoe model on TinyStories
//! (or, with no corpus, on squish's generated stories — said loudly), then measure it.
//!
//! [`run`] is what the pipeline's `baseline` stage calls; [`BaselineStage`] is its
//! `[stages.baseline]` table. The caller displays [`BaselineEvent`]s and writes the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, Checkpoint, Provenance};
use crate::config::{ModelConfig, SsmMoeConfig};
use crate::data::{
    Corpus, EvalMode, EvalText, locate_corpus, read_stories, story_tokens, train_story_tokenizer,
};
use crate::eval::{PerplexityReport, perplexity};
use crate::generate::generate;
use crate::model::CpuBackend;
use crate::model::ssm_moe::{ScanMode, SsmMoe};
use crate::model::ssm_moe_step::SsmMoeStepper;
use crate::model::ssm_moe_weights::init_weights;
use crate::sample::Sampler;
use crate::tokenizer::Tokenizer;
use crate::train::{TrainConfig, TrainPoint, train};
use crate::{Error, Result, fsutil};

/// `[stages.baseline]`: where the text is, the tokenizer, the model and its training.
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
    /// Tokens of the greedy sample in the report (a maximum: the sample stops at the story's end).
    #[serde(default = "default_sample")]
    pub sample_tokens: usize,
    /// Model hyper-parameters (`vocab_size` is overridden by the stage's).
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

/// What the baseline stage did and measured.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineResult {
    /// The checkpoint written.
    pub checkpoint: PathBuf,
    /// Where the text came from.
    pub corpus: Corpus,
    /// The evaluation text (mode, hash, size).
    pub eval_text: EvalText,
    /// Training stories.
    pub stories: usize,
    /// Parameters of the model.
    pub parameters: usize,
    /// Bytes of the checkpoint file.
    pub file_bytes: u64,
    /// Perplexity on the evaluation text (`llama-cpp` protocol).
    pub ppl: PerplexityReport,
    /// nats/token of an add-one unigram model of the training tokens on the same scored tokens.
    pub unigram_nats: f64,
    /// The training curve.
    pub curve: Vec<TrainPoint>,
    /// Greedy text after "Once upon a time".
    pub sample: String,
    /// Wall seconds of training.
    pub train_seconds: f64,
    /// Training tokens per second.
    pub tokens_per_s: f64,
}

/// Progress of [`run`].
#[derive(Debug, Clone)]
pub enum BaselineEvent {
    /// Text read and tokenized, model initialised; training starts.
    Prepared {
        /// Parameters of the model.
        parameters: usize,
        /// Training tokens (all stories, each BOS-first).
        train_tokens: usize,
        /// Training stories.
        stories: usize,
        /// Tokens of the evaluation text.
        valid_tokens: usize,
        /// Where the corpus was found.
        origin: String,
    },
    /// A training point.
    Train(TrainPoint),
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

/// Greedy text from `model` after `prompt`, at most `steps` tokens (stops at the story's end).
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

/// Runs the stage: writes the checkpoint (+ its content-named tokenizer beside it) to `out`,
/// with `fingerprint` as the provenance's config hash.
pub fn run(
    cfg: &BaselineStage,
    out: &Path,
    fingerprint: &str,
    on_event: &mut dyn FnMut(&BaselineEvent),
) -> Result<BaselineResult> {
    let corpus = locate_corpus(
        cfg.data_dir.as_deref(),
        &out.parent().unwrap_or(Path::new(".")).join("corpus"),
    )?;
    // Stories, not a stream: the `<|endoftext|>` separators never reach the tokenizer trainer
    // or the model; every story starts with BOS, so the model learns where a story ends.
    let stories = read_stories(&corpus.train)?;
    let eval_text = EvalText::load(&corpus.valid, cfg.eval_mode, cfg.eval_limit_bytes)?;
    let t0 = std::time::Instant::now();
    let tok = train_story_tokenizer(&stories, cfg.vocab_size)
        .map_err(|e| Error::invalid(format!("training the tokenizer: {e}")))?;
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "tokenizer trained");
    let tref = checkpoint::write_tokenizer(&tok.to_bytes(), "llama2c", out)?;
    let train_tokens = story_tokens(&tok, &stories);
    let valid_tokens = eval_text.tokens(&tok);
    let mut model_cfg = cfg.model.clone();
    model_cfg.vocab_size = cfg.vocab_size;

    let weights = init_weights(&model_cfg, cfg.seed)?;
    let model = SsmMoe::from_weights(
        &model_cfg,
        &weights,
        &cfg.backend.autodiff_device(),
        cfg.scan,
    )?;
    let params = weights.param_count();
    on_event(&BaselineEvent::Prepared {
        parameters: params,
        train_tokens: train_tokens.len(),
        stories: stories.len(),
        valid_tokens: valid_tokens.len(),
        origin: corpus.origin.clone(),
    });
    let t1 = std::time::Instant::now();
    let (model, curve) = train(
        model,
        &train_tokens,
        &valid_tokens,
        tok.bos_id(),
        &cfg.train,
        None,
        |p| on_event(&BaselineEvent::Train(p.clone())),
    )?;
    let train_seconds = t1.elapsed().as_secs_f64();
    let weights = model.to_weights()?;

    // Measure on the forward-only backend with the reference (sequential) scan.
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
    let file_bytes = std::fs::metadata(out)
        .map_err(|e| Error::io("reading the size of", out, e))?
        .len();
    let tokens_per_s =
        (cfg.train.steps * cfg.train.batch_size * cfg.train.seq_len) as f64 / train_seconds;
    Ok(BaselineResult {
        checkpoint: out.to_path_buf(),
        corpus,
        eval_text,
        stories: stories.len(),
        parameters: params,
        file_bytes,
        ppl,
        unigram_nats: unigram,
        curve,
        sample,
        train_seconds,
        tokens_per_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unigram_scores_only_the_second_half_of_each_chunk() {
        // Two tokens equally frequent in training → ln 2 per scored token (add-one: 3/6 each).
        let train = [0u32, 1, 0, 1];
        let valid = [0u32, 1, 0, 1, 0, 1, 0, 1];
        let nats = unigram_nats(&train, &valid, 2, 4);
        assert!((nats - 2f64.ln()).abs() < 1e-12, "{nats}");
    }
}
