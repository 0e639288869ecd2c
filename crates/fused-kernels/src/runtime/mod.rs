//! Native inference runtime: a checkpoint of either family (Llama, SsmMoe), in any
//! mix of F32 / F16 / INT8 / INT4 tensors, repacked once at load time and run on
//! the fused kernels of this crate.
//!
//! * [`Runtime::prefill`] runs a prompt as GEMMs over all its tokens (chunks of
//!   [`RuntimeOptions::max_batch`]) and returns the last position's logits;
//!   [`Runtime::prefill_all`] returns every position's logits.
//! * [`Runtime::step`] decodes one token (GEMVs) against the KV cache (Llama,
//!   preallocated to `seq_len`) or the O(1) recurrent state (SsmMoe). Nothing is
//!   allocated after [`Runtime::load`]: caches, states, activations and kernel
//!   scratch are sized up front.
//! * Fusions: RMSNorm is applied inside the activation staging of the matmul that
//!   follows it; Q/K/V are one stacked GEMM (when their formats match) with RoPE
//!   applied right after; SwiGLU gate/up are one stacked GEMM; the selective scan
//!   is one fused step per token; MoE runs only the routed experts (tokens are
//!   grouped per expert in prefill).
//! * Widths come from the tensor shapes (pruned checkpoints: per-layer FFN hidden,
//!   `d_inner`, expert counts, per-expert widths; odd widths down to 1), and every
//!   tensor may have its own storage format and group size.
//! * [`Runtime::logits_for_windows`] / [`Runtime::nll_for_windows`] score many
//!   independent windows (mixed-precision / pruning candidate scoring).
//! * [`squish_core::eval::LogitsModel`] and [`squish_core::generate::StepModel`]
//!   are implemented, so `eval` / `generate` run unchanged on the runtime.
//! * [`RuntimeOptions::act`] = [`Activations::Int8`] runs INT4 weights on the
//!   integer kernels (8-row interleaved `vpmaddubsw` GEMV, ~2–3× the float-activation
//!   INT4 kernel); it adds ≈0.2 % to stories260K INT4 perplexity, so the exact
//!   [`Activations::F32`] stays the default.
//!
//! Threads: `threads > 1` starts a persistent [`crate::pool::Pool`] with the runtime (workers
//! spin, then park, between calls). Matmuls of at least [`PAR_MIN_MACS`] multiply-adds split
//! their rows (one token) or tokens (prefill) over it, Llama's attention splits its query
//! tokens; SsmMoe runs each layer as five pool jobs split by tokens (matmuls, norms, routing,
//! experts) or channels (conv, scan); smaller work stays on the calling thread.
//! Every split keeps each output's arithmetic unchanged, so the logits are bit-identical for any
//! thread count. [`profile`] times each operation (opt-in).

mod blocks;
mod llama;
mod load;
mod phases;
pub mod profile;
mod rtn;
mod ssm_moe;
pub(crate) mod ssm_ops;
mod vecops;

use squish_core::checkpoint::{Checkpoint, Weights};
use squish_core::config::ModelConfig;
use squish_core::{Error, Result};

pub(crate) use blocks::{Head, SwiGlu};
pub use rtn::rtn_quantize;

use crate::dispatch::{self, SimdLevel};
use crate::matmul::{Activations, MatOpts};
use crate::ops::Ops;
use crate::pack::PackedWeight;
use crate::pool::Pool;
use crate::scratch::{RmsNorm, Scratch};
use crate::shared_stage::SharedStage;

/// Smallest matmul (`tokens · out · in` multiply-adds) that is split over the worker pool
/// when [`RuntimeOptions::threads`] > 1 (smaller ones cost less than the hand-off).
pub const PAR_MIN_MACS: usize = 1 << 16;

/// Most bytes of `f32` buffers the runtime allocates for a size read from a checkpoint's config
/// (the Llama KV cache and RoPE tables grow with `seq_len`, which no tensor's bytes back).
pub const MAX_CONFIG_ALLOC_BYTES: u128 = 2 << 30;

/// Refuses, naming `key`, when `Σ a·b` f32 values exceed [`MAX_CONFIG_ALLOC_BYTES`].
pub(crate) fn check_alloc(key: &str, parts: &[(usize, usize)]) -> Result<()> {
    let bytes: u128 = parts.iter().map(|&(a, b)| a as u128 * b as u128 * 4).sum();
    if bytes > MAX_CONFIG_ALLOC_BYTES {
        return Err(Error::invalid(format!(
            "model config `{key}` asks the runtime for {bytes} bytes of buffers (limit {MAX_CONFIG_ALLOC_BYTES})"
        )));
    }
    Ok(())
}

/// Options of [`Runtime::load_with`].
#[derive(Debug, Clone, Copy)]
pub struct RuntimeOptions {
    /// Kernel path (`None` = [`dispatch::active`], i.e. the best detected path
    /// lowered by `SQUISH_SIMD`); clamped to the hardware.
    pub level: Option<SimdLevel>,
    /// Activation precision used with quantized weights (F32/F16 weights ignore it).
    pub act: Activations,
    /// Threads (a persistent pool of `threads − 1` workers plus the caller; see the module
    /// docs and [`PAR_MIN_MACS`]); 0 or 1 = one thread.
    pub threads: usize,
    /// Tokens per prefill GEMM (longer prompts are processed in chunks).
    pub max_batch: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            level: None,
            act: Activations::F32,
            threads: 1,
            max_batch: 256,
        }
    }
}

/// Where a matmul runs: split over the pool (when big enough), or on the calling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    /// Rows (one token) or tokens split over the pool from [`PAR_MIN_MACS`] multiply-adds.
    Pool,
    /// The calling thread only: the caller is one part of a pool job already.
    Here,
}

/// Resolved execution settings shared by the families.
#[derive(Debug)]
pub(crate) struct Exec {
    pub ops: Ops,
    pub level: SimdLevel,
    pub act: Activations,
    /// The worker pool (`None` = one thread).
    pub pool: Option<Pool>,
}

impl Exec {
    /// `y [n, out] = W · x [n, in]` with an optional fused RMSNorm on `x`, split over the pool
    /// when it reaches [`PAR_MIN_MACS`].
    pub fn mm(
        &self,
        w: &PackedWeight,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        s: &mut Scratch,
        norm: Option<RmsNorm<'_>>,
    ) -> Result<()> {
        self.mm_split(Split::Pool, w, x, n, y, s, norm)
    }

    /// [`Exec::mm`], or on the calling thread alone when `split` is [`Split::Here`].
    #[allow(clippy::too_many_arguments)]
    pub fn mm_split(
        &self,
        split: Split,
        w: &PackedWeight,
        x: &[f32],
        n: usize,
        y: &mut [f32],
        s: &mut Scratch,
        norm: Option<RmsNorm<'_>>,
    ) -> Result<()> {
        let pool = match split {
            Split::Pool => self.pool_for(n * w.out() * w.inp(), PAR_MIN_MACS),
            Split::Here => None,
        };
        let opts = MatOpts {
            act: self.act,
            level: Some(self.level),
            norm,
            threads: 1,
        };
        w.matmul_pooled(&x[..n * w.inp()], n, &mut y[..n * w.out()], s, &opts, pool)
            .map_err(|e| Error::invalid(format!("matmul: {e}")))
    }

    /// Int8 activations staged once for several weights (`ws`) that read the same staging, on the
    /// calling thread; `None` with float activations, when the stagings differ, or when `split`
    /// would put this work on the pool (then each weight runs through [`Exec::mm_split`]).
    pub fn stage_shared<'s, 'w>(
        &self,
        split: Split,
        ws: impl IntoIterator<Item = &'w PackedWeight> + Clone,
        x: &'s [f32],
        n: usize,
        s: &'s mut Scratch,
        norm: Option<RmsNorm<'_>>,
    ) -> Result<Option<SharedStage<'s>>> {
        if self.act != Activations::Int8 {
            return Ok(None);
        }
        if split == Split::Pool {
            let macs: usize = ws.clone().into_iter().map(|w| n * w.out() * w.inp()).sum();
            if self.pool_for(macs, PAR_MIN_MACS).is_some() {
                return Ok(None);
            }
        }
        crate::shared_stage::stage_shared(ws, x, n, s, norm, self.level)
            .map_err(|e| Error::invalid(format!("matmul: {e}")))
    }

    /// The pool, if there is one and `work` (in the caller's unit) reaches `min`.
    pub fn pool_for(&self, work: usize, min: usize) -> Option<&Pool> {
        self.pool.as_ref().filter(|_| work >= min)
    }
}

/// Which logits a forward chunk must produce.
pub(crate) enum Logits<'a> {
    /// None (a non-final prefill chunk).
    None,
    /// The last position only: `[vocab]`.
    Last(&'a mut [f32]),
    /// Every position: `[n, vocab]`.
    All(&'a mut [f32]),
}

/// One model family's forward over a chunk of at most [`Family::cap`] tokens.
pub(crate) trait Family: Send + std::fmt::Debug {
    /// Largest chunk.
    fn cap(&self) -> usize;
    /// Longest sequence (`usize::MAX` for recurrent models).
    fn max_positions(&self) -> usize;
    /// True when the position can be moved back (KV cache) without recomputation.
    fn can_rewind(&self) -> bool;
    /// Clears caches / state.
    fn reset(&mut self);
    /// Runs `tokens` at positions `pos0..` and writes the requested logits.
    fn forward(&mut self, ex: &Exec, tokens: &[u32], pos0: usize, out: Logits<'_>) -> Result<()>;
}

/// Reserves `s` for `n` tokens of every weight (SwiGLU outputs: [`SwiGlu::reserve`]).
pub(crate) fn reserve<'a>(
    s: &mut Scratch,
    ws: impl IntoIterator<Item = &'a PackedWeight>,
    n: usize,
) {
    for w in ws {
        s.reserve(w, n);
    }
}

/// The native runtime of one checkpoint (see the module docs).
#[derive(Debug)]
pub struct Runtime {
    fam: Box<dyn Family>,
    ex: Exec,
    pos: usize,
    /// `[vocab]` logits of the last position.
    logits: Vec<f32>,
    vocab: usize,
    summary: String,
}

impl Runtime {
    /// Loads a checkpoint with [`RuntimeOptions::default`].
    pub fn load(ckpt: &Checkpoint) -> Result<Runtime> {
        Runtime::load_with(ckpt, RuntimeOptions::default())
    }

    /// Loads a checkpoint with explicit options.
    pub fn load_with(ckpt: &Checkpoint, opts: RuntimeOptions) -> Result<Runtime> {
        Runtime::from_weights(&ckpt.config, &ckpt.weights, opts)
    }

    /// Builds the runtime from a config and weights (any storage format per tensor).
    pub fn from_weights(
        config: &ModelConfig,
        w: &Weights,
        opts: RuntimeOptions,
    ) -> Result<Runtime> {
        config.validate()?;
        let cap = opts.max_batch.max(1);
        let threads = opts.threads.max(1);
        let fam: Box<dyn Family> = match config {
            ModelConfig::Llama(c) => Box::new(llama::LlamaRt::load(c, w, cap, threads)?),
            ModelConfig::SsmMoe(c) => Box::new(ssm_moe::SsmRt::load(c, w, cap, threads)?),
        };
        let level = dispatch::resolve(opts.level);
        let pool =
            if threads > 1 {
                Some(Pool::new(threads).map_err(|e| {
                    Error::invalid(format!("starting {threads} worker threads: {e}"))
                })?)
            } else {
                None
            };
        let ex = Exec {
            ops: Ops::new(Some(level)),
            level,
            act: opts.act,
            pool,
        };
        let vocab = config.vocab_size();
        Ok(Runtime {
            fam,
            ex,
            pos: 0,
            logits: vec![0.0; vocab],
            vocab,
            summary: load::format_summary(w),
        })
    }

    /// The kernel path in use.
    pub fn level(&self) -> SimdLevel {
        self.ex.level
    }

    /// Tensor formats of the loaded checkpoint, e.g. `"f32×12 q4×35, 0.13 MB"`.
    pub fn format_summary(&self) -> &str {
        &self.summary
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Longest sequence (`seq_len` for Llama, unbounded for SsmMoe).
    pub fn max_positions(&self) -> usize {
        self.fam.max_positions()
    }

    /// Tokens consumed since the last [`Runtime::reset`].
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Back to position 0 (clears the KV cache / recurrent state).
    pub fn reset(&mut self) {
        self.fam.reset();
        self.pos = 0;
    }

    fn check(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::invalid("no tokens to run"));
        }
        if self.pos + n > self.fam.max_positions() {
            return Err(Error::invalid(format!(
                "position {} exceeds the model's {} positions",
                self.pos + n,
                self.fam.max_positions()
            )));
        }
        Ok(())
    }

    /// Runs `tokens` from the current position as GEMMs; returns the last position's
    /// logits `[vocab]`.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.check(tokens.len())?;
        let cap = self.fam.cap();
        let chunks = tokens.len().div_ceil(cap);
        for (i, ch) in tokens.chunks(cap).enumerate() {
            let out = if i + 1 == chunks {
                Logits::Last(&mut self.logits)
            } else {
                Logits::None
            };
            self.fam.forward(&self.ex, ch, self.pos, out)?;
            self.pos += ch.len();
        }
        Ok(&self.logits)
    }

    /// Runs `tokens` from the current position and writes every position's logits
    /// into `out [tokens.len(), vocab]`.
    pub fn prefill_all(&mut self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        self.check(tokens.len())?;
        let v = self.vocab;
        if out.len() != tokens.len() * v {
            return Err(Error::invalid(format!(
                "logits buffer holds {} values, {} tokens need {}",
                out.len(),
                tokens.len(),
                tokens.len() * v
            )));
        }
        let cap = self.fam.cap();
        for (ch, o) in tokens.chunks(cap).zip(out.chunks_mut(cap * v)) {
            self.fam.forward(&self.ex, ch, self.pos, Logits::All(o))?;
            self.pos += ch.len();
        }
        self.logits.copy_from_slice(&out[out.len() - v..]);
        Ok(())
    }

    /// Decodes one token at the current position; returns its logits `[vocab]`.
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        self.check(1)?;
        self.fam
            .forward(&self.ex, &[token], self.pos, Logits::Last(&mut self.logits))?;
        self.pos += 1;
        Ok(&self.logits)
    }

    /// Logits of the last position run.
    pub fn last_logits(&self) -> &[f32] {
        &self.logits
    }

    /// Scores independent token windows (each from position 0, as
    /// [`Runtime::reset`] + [`Runtime::prefill_all`]): `out` is resized to
    /// `[Σ len_i, vocab]` — window after window, every position's logits. Windows
    /// may differ in length; an empty window contributes nothing. `out` keeps its
    /// capacity, so repeated calls with the same windows do not allocate.
    ///
    /// This is the fast path for stages that score many candidate checkpoints
    /// (mixed precision, pruning): one GEMM chunk per [`RuntimeOptions::max_batch`]
    /// tokens instead of a per-token decode loop.
    pub fn logits_for_windows(&mut self, windows: &[Vec<u32>], out: &mut Vec<f32>) -> Result<()> {
        let v = self.vocab;
        let total: usize = windows.iter().map(Vec::len).sum();
        out.clear();
        out.resize(total * v, 0.0);
        let mut at = 0;
        for win in windows.iter().filter(|w| !w.is_empty()) {
            self.reset();
            let len = win.len() * v;
            self.prefill_all(win, &mut out[at..at + len])?;
            at += len;
        }
        Ok(())
    }

    /// Next-token negative log-likelihood over independent windows: for each window
    /// (run from position 0) the sum of `−ln p(win[t+1] | win[..=t])` over
    /// `t < len − 1`. Returns `(Σ nll in nats, number of predicted tokens)`, so
    /// perplexity is `exp(sum / count)`. `buf` holds one window's logits between
    /// calls (reuse it to avoid allocations).
    pub fn nll_for_windows(
        &mut self,
        windows: &[Vec<u32>],
        buf: &mut Vec<f32>,
    ) -> Result<(f64, usize)> {
        let v = self.vocab;
        let (mut sum, mut count) = (0f64, 0usize);
        for win in windows.iter().filter(|w| w.len() > 1) {
            self.reset();
            buf.clear();
            buf.resize(win.len() * v, 0.0);
            self.prefill_all(win, buf)?;
            for (t, row) in buf.chunks_exact(v).enumerate().take(win.len() - 1) {
                let target = win[t + 1] as usize;
                if target >= v {
                    return Err(Error::invalid(format!(
                        "token id {target} outside vocabulary of {v}"
                    )));
                }
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let lse = row
                    .iter()
                    .map(|&x| ((x - m) as f64).exp())
                    .sum::<f64>()
                    .ln()
                    + m as f64;
                sum += lse - row[target] as f64;
                count += 1;
            }
        }
        Ok((sum, count))
    }
}

impl squish_core::eval::LogitsModel for Runtime {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn logits(&mut self, batch: &[Vec<u32>]) -> Result<Vec<f32>> {
        let seq = batch.first().map_or(0, Vec::len);
        if batch.iter().any(|r| r.len() != seq) {
            return Err(Error::invalid("token batch must be rectangular"));
        }
        let mut out = vec![0.0; batch.len() * seq * self.vocab];
        for (row, o) in batch.iter().zip(out.chunks_mut(seq * self.vocab)) {
            self.reset();
            self.prefill_all(row, o)?;
        }
        Ok(out)
    }
}

impl squish_core::generate::StepModel for Runtime {
    fn step(&mut self, token: u32, pos: usize) -> Result<Vec<f32>> {
        if pos == 0 {
            self.reset();
        } else if pos != self.pos {
            if pos < self.pos && self.fam.can_rewind() {
                self.pos = pos;
            } else {
                return Err(Error::invalid(format!(
                    "step at position {pos}, but the runtime is at {}",
                    self.pos
                )));
            }
        }
        Ok(Runtime::step(self, token)?.to_vec())
    }
    fn max_positions(&self) -> usize {
        self.fam.max_positions()
    }
}
