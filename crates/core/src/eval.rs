//! Perplexity, measured the way the field's reference tool does.
//!
//! Protocol **`llama-cpp`** reproduces the default of llama.cpp's `tools/perplexity/perplexity.cpp`:
//! tokenize the whole text once with BOS; cut it into `⌊n / ctx⌋` non-overlapping chunks of `ctx`
//! tokens (the tail is dropped); replace the first token of every chunk with BOS; score only the
//! second half of each chunk — the predictions made at positions `ctx/2 … ctx−2` of the next
//! token — so every scored token sees at least `ctx/2` tokens of context. PPL = exp(mean NLL).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The perplexity protocols squish implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// llama.cpp `llama-perplexity` default (see module docs).
    #[serde(rename = "llama-cpp")]
    LlamaCpp,
}

impl Protocol {
    /// Parses the protocol name used on the command line and in reports.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "llama-cpp" => Ok(Protocol::LlamaCpp),
            other => Err(Error::invalid(format!(
                "unknown perplexity protocol `{other}` (supported: llama-cpp)"
            ))),
        }
    }
    /// The protocol's name.
    pub fn name(self) -> &'static str {
        "llama-cpp"
    }
}

/// Anything that turns a batch of equal-length token rows into logits.
pub trait LogitsModel {
    /// Vocabulary size (logits per position).
    fn vocab_size(&self) -> usize;
    /// Logits for every position: a flat `[batch, seq, vocab]` buffer.
    fn logits(&mut self, batch: &[Vec<u32>]) -> Result<Vec<f32>>;
}

/// The result of a perplexity run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityReport {
    /// exp(nats_per_token).
    pub ppl: f64,
    /// Mean negative log-likelihood of the scored tokens, in nats.
    pub nats_per_token: f64,
    /// Number of scored tokens.
    pub tokens: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens in the whole tokenized text (including the BOS).
    pub total_tokens: usize,
    /// Protocol name.
    pub protocol: String,
    /// Context length.
    pub ctx: usize,
}

/// The chunks the `llama-cpp` protocol evaluates: `⌊n/ctx⌋` windows, first token set to `bos`.
pub fn llama_cpp_chunks(tokens: &[u32], ctx: usize, bos: u32) -> Result<Vec<Vec<u32>>> {
    if ctx < 4 || !ctx.is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "ctx must be an even number ≥ 4, got {ctx}"
        )));
    }
    if tokens.len() < 2 * ctx {
        return Err(Error::invalid(format!(
            "the text has {} tokens; the llama-cpp protocol needs at least 2·ctx = {}",
            tokens.len(),
            2 * ctx
        )));
    }
    Ok(tokens
        .chunks_exact(ctx)
        .map(|c| {
            let mut c = c.to_vec();
            c[0] = bos;
            c
        })
        .collect())
}

/// Negative log-likelihood (nats) of `target` under `logits`, accumulated in f64.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    -(logits[target] as f64 - max - sum.ln())
}

/// Perplexity of `model` on the tokenized text `tokens` (BOS first) under `protocol`.
/// `batch` chunks are evaluated per call; `progress` is called with (chunks done, total).
pub fn perplexity(
    model: &mut dyn LogitsModel,
    tokens: &[u32],
    ctx: usize,
    bos: u32,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<PerplexityReport> {
    let chunks = llama_cpp_chunks(tokens, ctx, bos)?;
    let vocab = model.vocab_size();
    let first = ctx / 2;
    let (mut total, mut count) = (0.0f64, 0usize);
    for (bi, group) in chunks.chunks(batch.max(1)).enumerate() {
        let logits = model.logits(group)?;
        if logits.len() != group.len() * ctx * vocab {
            return Err(Error::invalid(format!(
                "model returned {} logits for a [{}, {ctx}, {vocab}] batch",
                logits.len(),
                group.len()
            )));
        }
        for (ci, chunk) in group.iter().enumerate() {
            // Chunk index in the original token stream, to read the true next tokens.
            let start = (bi * batch.max(1) + ci) * ctx;
            for j in first..ctx - 1 {
                let row = &logits[(ci * ctx + j) * vocab..(ci * ctx + j + 1) * vocab];
                let target = tokens[start + j + 1] as usize;
                debug_assert_eq!(target, chunk[j + 1] as usize);
                let v = nll(row, target);
                if !v.is_finite() {
                    return Err(Error::invalid(format!(
                        "non-finite loss at chunk {} position {j}",
                        start / ctx
                    )));
                }
                total += v;
                count += 1;
            }
        }
        progress(((bi + 1) * batch.max(1)).min(chunks.len()), chunks.len());
    }
    let nats = total / count as f64;
    Ok(PerplexityReport {
        ppl: nats.exp(),
        nats_per_token: nats,
        tokens: count,
        chunks: chunks.len(),
        total_tokens: tokens.len(),
        protocol: Protocol::LlamaCpp.name().into(),
        ctx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that predicts uniformly: PPL must equal the vocabulary size exactly.
    struct Uniform(usize);
    impl LogitsModel for Uniform {
        fn vocab_size(&self) -> usize {
            self.0
        }
        fn logits(&mut self, batch: &[Vec<u32>]) -> Result<Vec<f32>> {
            Ok(vec![0.5; batch.len() * batch[0].len() * self.0])
        }
    }

    #[test]
    fn uniform_model_has_ppl_equal_to_vocab_and_counts_match_llama_cpp() {
        let tokens: Vec<u32> = (0..1000).map(|i| (i % 7) as u32).collect();
        let r = perplexity(&mut Uniform(7), &tokens, 256, 1, 2, |_, _| {}).unwrap();
        assert!((r.ppl - 7.0).abs() < 1e-9, "{}", r.ppl);
        assert_eq!(r.chunks, 3); // ⌊1000/256⌋
        assert_eq!(r.tokens, 3 * 127); // ctx/2 − 1 scored per chunk
    }

    #[test]
    fn chunks_start_with_bos_and_short_text_is_an_error() {
        let tokens: Vec<u32> = (10..30).collect();
        let c = llama_cpp_chunks(&tokens, 8, 1).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1], vec![1, 19, 20, 21, 22, 23, 24, 25]);
        assert!(llama_cpp_chunks(&tokens[..10], 8, 1).is_err());
        assert!(llama_cpp_chunks(&tokens, 7, 1).is_err());
    }

    #[test]
    fn nll_matches_closed_form() {
        let l = [1.0f32, 2.0, 3.0];
        let want = -(3.0f64 - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln());
        assert!((nll(&l, 2) - want).abs() < 1e-12);
    }
}
