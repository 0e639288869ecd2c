//! What every squish stage measures on the checkpoint it wrote, the same way: file bytes,
//! parameters, tensor formats, perplexity by the `llama-cpp` protocol and a greedy sample — all on
//! the native [`Runtime`], so the numbers in reports are the runtime's, not fake-quant.
//!
//! ```no_run
//! use squish_core::{checkpoint, data::{EvalMode, EvalText}};
//! use squish_kernels::measure::{MeasureOptions, measure};
//!
//! let path = std::path::Path::new("checkpoints/phase7/mixed_precision/model.safetensors");
//! let ckpt = checkpoint::load(path)?;
//! let tok = checkpoint::load_tokenizer(path, &ckpt)?;
//! let text = EvalText::load("reports/phase7_eval.txt".as_ref(), EvalMode::Stories, None)?;
//! let m = measure(path, &ckpt, &tok, &text.tokens(&tok), &MeasureOptions::default(), &mut |_, _| {})?;
//! println!("{} bytes, PPL {:.4}: {}", m.file_bytes, m.ppl.ppl, m.sample);
//! # Ok::<(), squish_core::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use squish_core::Result;
use squish_core::checkpoint::Checkpoint;
use squish_core::eval::{PerplexityReport, perplexity};
use squish_core::fsutil;
use squish_core::generate::generate;
use squish_core::sample::Sampler;
use squish_core::tokenizer::Tokenizer;

use crate::runtime::Runtime;

/// The prompt of every greedy sample.
pub const SAMPLE_PROMPT: &str = "Once upon a time";

/// Windows the perplexity scores per runtime call.
const PPL_BATCH: usize = 8;

/// How [`measure`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureOptions {
    /// Context of the `llama-cpp` perplexity protocol.
    pub eval_ctx: usize,
    /// Positions of the greedy sample after [`SAMPLE_PROMPT`] (it stops earlier at the end of
    /// the story).
    pub sample_tokens: usize,
}

impl Default for MeasureOptions {
    /// Context 256, 160-token samples (the pipeline's `[data]` defaults).
    fn default() -> Self {
        MeasureOptions {
            eval_ctx: 256,
            sample_tokens: 160,
        }
    }
}

/// What [`measure`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Its sha256.
    pub sha256: String,
    /// Its size on disk.
    pub file_bytes: u64,
    /// Logical parameters (elements of every tensor, quantized ones counted unpacked).
    pub parameters: usize,
    /// Tensor count per storage format (`f32`, `f16`, `q4`, `q8`).
    pub formats: BTreeMap<String, usize>,
    /// Perplexity on the evaluation tokens, `llama-cpp` protocol, by the native runtime.
    pub ppl: PerplexityReport,
    /// Greedy sample after [`SAMPLE_PROMPT`], by the native runtime.
    pub sample: String,
    /// Whether the sample stopped at the end of its story (else at `sample_tokens`).
    pub sample_ended: bool,
    /// The engine that produced the numbers, with the checkpoint's format summary.
    pub engine: String,
}

/// Measures the checkpoint `ckpt` saved at `path`: its file bytes and sha256, parameters,
/// formats, the perplexity of `valid` (tokens of the evaluation text, BOS first) and a greedy
/// sample, both on the native runtime. `progress` sees (perplexity chunks done, total).
pub fn measure(
    path: &Path,
    ckpt: &Checkpoint,
    tok: &dyn Tokenizer,
    valid: &[u32],
    opts: &MeasureOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Measurement> {
    let mut formats = BTreeMap::new();
    for (_, t) in ckpt.weights.iter() {
        *formats.entry(t.format_name().to_string()).or_insert(0) += 1;
    }
    let mut rt = Runtime::load(ckpt)?;
    let ppl = perplexity(
        &mut rt,
        valid,
        opts.eval_ctx,
        tok.bos_id(),
        PPL_BATCH,
        progress,
    )?;
    let (sample, sample_ended) = greedy_sample(&mut rt, tok, opts.sample_tokens)?;
    Ok(Measurement {
        checkpoint: path.to_path_buf(),
        sha256: fsutil::sha256_file(path)?,
        file_bytes: std::fs::metadata(path)
            .map_err(|e| squish_core::Error::io("reading the size of", path, e))?
            .len(),
        parameters: ckpt.weights.param_count(),
        formats,
        ppl,
        sample,
        sample_ended,
        engine: format!("squish-kernels native runtime ({})", rt.format_summary()),
    })
}

/// Perplexity of `ckpt` on `tokens` (BOS first) by the `llama-cpp` protocol with context `ctx`,
/// on the native runtime — the same computation as [`measure`]'s, without a file.
pub fn native_perplexity(
    ckpt: &Checkpoint,
    tokens: &[u32],
    ctx: usize,
    bos: u32,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PerplexityReport> {
    let mut rt = Runtime::load(ckpt)?;
    perplexity(&mut rt, tokens, ctx, bos, PPL_BATCH, progress)
}

/// Greedy text after [`SAMPLE_PROMPT`] from the runtime, and whether it stopped at the end of
/// the story (a BOS/EOS) rather than after `steps` positions.
pub fn greedy_sample(
    rt: &mut Runtime,
    tok: &dyn Tokenizer,
    steps: usize,
) -> Result<(String, bool)> {
    rt.reset();
    let limit = steps.min(rt.max_positions());
    let mut out = Vec::new();
    let ids = generate(
        rt,
        tok,
        SAMPLE_PROMPT,
        steps,
        &mut Sampler::new(0.0, 0.9, 1),
        |p| out.extend_from_slice(p),
    )?;
    // `generate` holds BOS + one token per position run; fewer means the story ended.
    Ok((
        String::from_utf8_lossy(&out).into_owned(),
        ids.len() <= limit,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::checkpoint::{self, Provenance};
    use squish_core::config::{ModelConfig, SsmMoeConfig};
    use squish_core::data::synth;
    use squish_core::model::ssm_moe_weights::init_weights;
    use squish_core::tokenizer::train::train_bpe;

    /// A tiny random SsmMoe with a BPE tokenizer trained on generated stories, saved to a
    /// temporary file: `measure` reports that file's bytes and sha256, the runtime's perplexity
    /// (equal to `native_perplexity`'s) and a greedy sample that starts with the prompt.
    #[test]
    fn measures_the_saved_file_on_the_native_runtime() {
        let text = synth::corpus(60, 3);
        let tok = train_bpe(&text, 300).unwrap();
        let c = SsmMoeConfig {
            d_model: 16,
            n_layers: 1,
            vocab_size: 300,
            seq_len: 64,
            d_inner: 16,
            d_state: 4,
            d_conv: 4,
            dt_rank: 2,
            n_experts: 2,
            top_k: 1,
            expert_hidden: 16,
            norm_eps: 1e-5,
        };
        let ckpt = Checkpoint {
            config: ModelConfig::SsmMoe(c.clone()),
            weights: init_weights(&c, 1).unwrap(),
            provenance: Provenance::default(),
            metrics: Default::default(),
            tokenizer: None,
        };
        let dir = std::env::temp_dir().join(format!("squish-measure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        checkpoint::save(&ckpt, &path).unwrap();
        let valid = tok.encode(&text, true, false);
        let opts = MeasureOptions {
            eval_ctx: 32,
            sample_tokens: 48,
        };
        let mut calls = 0;
        let m = measure(&path, &ckpt, &tok, &valid, &opts, &mut |done, total| {
            calls += 1;
            assert!(done <= total);
        })
        .unwrap();
        assert!(calls > 0);
        assert_eq!(m.file_bytes, std::fs::metadata(&path).unwrap().len());
        assert_eq!(m.sha256, fsutil::sha256_file(&path).unwrap());
        assert_eq!(m.parameters, ckpt.weights.param_count());
        assert_eq!(m.formats.get("f32"), Some(&ckpt.weights.len()));
        assert_eq!(m.ppl.ctx, 32);
        assert_eq!(m.ppl.protocol, "llama-cpp");
        let p = native_perplexity(&ckpt, &valid, 32, tok.bos_id(), &mut |_, _| {}).unwrap();
        assert_eq!(p, m.ppl);
        // A random model: about as uncertain as the vocabulary, never better than certain.
        assert!(m.ppl.ppl > 1.0 && m.ppl.ppl.is_finite());
        assert!(m.sample.starts_with(SAMPLE_PROMPT), "{}", m.sample);
        assert!(m.engine.contains("native runtime"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
