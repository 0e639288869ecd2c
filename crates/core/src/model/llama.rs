//! The Llama family in burn (llama2.c conventions): RMSNorm, RoPE on interleaved pairs, GQA
//! attention, SwiGLU FFN, tied or separate classifier. The residual width, per-layer FFN widths
//! and head counts are read from the tensors, so pruned checkpoints load too.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};

// The names are framework-free (`llama_names`); re-exported at their historical path.
use super::act_op::silu;
pub use super::llama_names::layer_tensor_names;
use super::ops::{embed, linear, param1, param2, put_param, rms_norm};
use super::softmax_op::causal_softmax;
use super::structure::residual_width;
use crate::checkpoint::Weights;
use crate::config::LlamaConfig;
use crate::{Error, Result};

/// One transformer block.
#[derive(Module, Debug)]
pub struct LlamaBlock {
    /// Pre-attention RMSNorm gain `[dim]`.
    pub attention_norm: Param<Tensor<1>>,
    /// Query projection `[n_heads·head, dim]`.
    pub wq: Param<Tensor<2>>,
    /// Key projection `[n_kv·head, dim]`.
    pub wk: Param<Tensor<2>>,
    /// Value projection `[n_kv·head, dim]`.
    pub wv: Param<Tensor<2>>,
    /// Output projection `[dim, n_heads·head]`.
    pub wo: Param<Tensor<2>>,
    /// Pre-FFN RMSNorm gain `[dim]`.
    pub ffn_norm: Param<Tensor<1>>,
    /// Gate projection `[hidden, dim]`.
    pub w1: Param<Tensor<2>>,
    /// Down projection `[dim, hidden]`.
    pub w2: Param<Tensor<2>>,
    /// Up projection `[hidden, dim]`.
    pub w3: Param<Tensor<2>>,
}

/// A Llama model.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding `[vocab, dim]` (also the classifier when shared).
    pub tok_embeddings: Param<Tensor<2>>,
    /// The blocks.
    pub layers: Vec<LlamaBlock>,
    /// Final RMSNorm gain `[dim]`.
    pub norm: Param<Tensor<1>>,
    /// Separate classifier `[vocab, dim]`, if not shared.
    pub output: Option<Param<Tensor<2>>>,
    /// Hyper-parameters.
    #[module(skip)]
    pub config: LlamaConfig,
}

impl Llama {
    /// Builds the model from checkpoint weights (quantized tensors are dequantized).
    pub fn from_weights(config: &LlamaConfig, w: &Weights, device: &Device) -> Result<Self> {
        config.validate()?;
        // The residual width comes from the embedding (width pruning); heads keep `head_size`.
        let (d, hs) = (residual_width(w, config.vocab_size)?, config.head_size());
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let n = layer_tensor_names(i);
            // Per-layer head counts come from the shapes (head pruning keeps `head_size`).
            let dim0 = |t: &str| w.get(t).map(|x| x.shape.first().copied().unwrap_or(0));
            let (q, kv) = (dim0(&n[1])?, dim0(&n[2])?);
            if q % hs != 0 || kv % hs != 0 || kv == 0 || q == 0 || !(q / hs).is_multiple_of(kv / hs)
            {
                return Err(Error::tensor(
                    &n[1],
                    format!(
                        "{q} query rows / {kv} kv rows do not form whole GQA head groups of {hs}"
                    ),
                ));
            }
            let hidden = w
                .get(&n[6])?
                .shape
                .first()
                .copied()
                .ok_or_else(|| Error::tensor(&n[6], "empty shape"))?;
            layers.push(LlamaBlock {
                attention_norm: param1(w, &n[0], d, device)?,
                wq: param2(w, &n[1], q, d, device)?,
                wk: param2(w, &n[2], kv, d, device)?,
                wv: param2(w, &n[3], kv, d, device)?,
                wo: param2(w, &n[4], d, q, device)?,
                ffn_norm: param1(w, &n[5], d, device)?,
                w1: param2(w, &n[6], hidden, d, device)?,
                w2: param2(w, &n[7], d, hidden, device)?,
                w3: param2(w, &n[8], hidden, d, device)?,
            });
        }
        let output = if config.shared_classifier {
            None
        } else {
            Some(param2(w, "output.weight", config.vocab_size, d, device)?)
        };
        Ok(Llama {
            tok_embeddings: param2(w, "tok_embeddings.weight", config.vocab_size, d, device)?,
            layers,
            norm: param1(w, "norm.weight", d, device)?,
            output,
            config: config.clone(),
        })
    }

    /// The model's parameters as F32 [`Weights`] with checkpoint names.
    pub fn to_weights(&self) -> Result<Weights> {
        let mut w = Weights::new();
        put_param(&mut w, "tok_embeddings.weight", &self.tok_embeddings)?;
        for (i, l) in self.layers.iter().enumerate() {
            let n = layer_tensor_names(i);
            put_param(&mut w, n[0].clone(), &l.attention_norm)?;
            put_param(&mut w, n[1].clone(), &l.wq)?;
            put_param(&mut w, n[2].clone(), &l.wk)?;
            put_param(&mut w, n[3].clone(), &l.wv)?;
            put_param(&mut w, n[4].clone(), &l.wo)?;
            put_param(&mut w, n[5].clone(), &l.ffn_norm)?;
            put_param(&mut w, n[6].clone(), &l.w1)?;
            put_param(&mut w, n[7].clone(), &l.w2)?;
            put_param(&mut w, n[8].clone(), &l.w3)?;
        }
        put_param(&mut w, "norm.weight", &self.norm)?;
        if let Some(o) = &self.output {
            put_param(&mut w, "output.weight", o)?;
        }
        Ok(w)
    }

    /// Logits for every position of a batch of equal-length token rows: `[batch, seq, vocab]`.
    pub fn forward(&self, tokens: &[Vec<u32>]) -> Result<Tensor<3>> {
        self.forward_captured(tokens, &mut |_, _| {})
    }

    /// [`Self::forward`], also handing `capture` the input of every linear layer as
    /// `(weight name, x [batch, seq, in])` — the calibration statistics of quantization and
    /// activation-aware pruning come from here. Weights sharing an input (wq/wk/wv, w1/w3) are
    /// reported once each.
    pub fn forward_captured(
        &self,
        tokens: &[Vec<u32>],
        capture: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Result<Tensor<3>> {
        let device = self.tok_embeddings.val().device();
        let c = &self.config;
        let seq = tokens.first().map_or(0, Vec::len);
        if seq > c.seq_len {
            return Err(Error::invalid(format!(
                "sequence of {seq} tokens exceeds the model's seq_len {}",
                c.seq_len
            )));
        }
        let mut x = embed(&self.tok_embeddings, tokens, &device)?; // [batch, seq, dim]
        let (cos, sin) = rope_tables(c, seq, &device); // [seq, head/2] each
        for (i, layer) in self.layers.iter().enumerate() {
            let names = layer_tensor_names(i);
            let h = rms_norm(x.clone(), &layer.attention_norm, c.norm_eps); // [batch, seq, dim]
            for n in &names[1..4] {
                capture(n, &h);
            }
            x = x + self.attention(layer, h, &cos, &sin, &mut |v| capture(&names[4], v)); // [batch, seq, dim]
            let h = rms_norm(x.clone(), &layer.ffn_norm, c.norm_eps); // [batch, seq, dim]
            capture(&names[6], &h);
            capture(&names[8], &h);
            let gate = silu(linear(h.clone(), &layer.w1)); // [batch, seq, hidden]
            let up = linear(h, &layer.w3); // [batch, seq, hidden]
            let act = gate * up; // [batch, seq, hidden]
            capture(&names[7], &act);
            x = x + linear(act, &layer.w2); // [batch, seq, dim]
        }
        let x = rms_norm(x, &self.norm, c.norm_eps); // [batch, seq, dim]
        let classifier = if self.output.is_some() {
            "output.weight"
        } else {
            "tok_embeddings.weight"
        };
        capture(classifier, &x);
        Ok(linear(
            x,
            self.output.as_ref().unwrap_or(&self.tok_embeddings),
        )) // [batch, seq, vocab]
    }

    fn attention(
        &self,
        l: &LlamaBlock,
        h: Tensor<3>,
        cos: &Tensor<2>,
        sin: &Tensor<2>,
        capture_wo: &mut dyn FnMut(&Tensor<3>),
    ) -> Tensor<3> {
        let c = &self.config;
        let [b, t, _] = h.dims();
        let hs = c.head_size();
        let (nh, nkv) = (l.wq.dims()[0] / hs, l.wk.dims()[0] / hs); // per-layer (pruned) heads
        let rep = nh / nkv;
        let q = linear(h.clone(), &l.wq)
            .reshape([b, t, nh, hs])
            .swap_dims(1, 2); // [batch, heads, seq, head]
        let k = linear(h.clone(), &l.wk)
            .reshape([b, t, nkv, hs])
            .swap_dims(1, 2); // [batch, kv, seq, head]
        let v = linear(h, &l.wv).reshape([b, t, nkv, hs]).swap_dims(1, 2); // [batch, kv, seq, head]
        let q = apply_rope(q, cos, sin); // [batch, heads, seq, head]
        let k = apply_rope(k, cos, sin); // [batch, kv, seq, head]
        // GQA: query head j reads kv head j / rep.
        let k = k
            .reshape([b, nkv, 1, t, hs])
            .expand([b, nkv, rep, t, hs])
            .reshape([b, nh, t, hs]); // [batch, heads, seq, head]
        let v = v
            .reshape([b, nkv, 1, t, hs])
            .expand([b, nkv, rep, t, hs])
            .reshape([b, nh, t, hs]); // [batch, heads, seq, head]
        let scores = q.matmul(k.swap_dims(2, 3)) / (hs as f32).sqrt(); // [batch, heads, seq, seq]
        let att = causal_softmax(scores).matmul(v); // [batch, heads, seq, head]
        let att = att.swap_dims(1, 2).reshape([b, t, nh * hs]); // [batch, seq, heads·head]
        capture_wo(&att);
        linear(att, &l.wo) // [batch, seq, dim]
    }
}

/// RoPE cos/sin tables `[seq, head/2]` in llama2.c's convention: pair i of a head rotates by
/// `pos / theta^(2i / head)`, computed in f32 as run.c does.
pub fn rope_tables(c: &LlamaConfig, seq: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let hs = c.head_size();
    let half = hs / 2;
    let mut cos = Vec::with_capacity(seq * half);
    let mut sin = Vec::with_capacity(seq * half);
    for pos in 0..seq {
        for i in 0..half {
            let freq = 1.0f32 / c.rope_theta.powf((2 * i) as f32 / hs as f32);
            let val = pos as f32 * freq;
            cos.push(val.cos());
            sin.push(val.sin());
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [seq, half]), device),
        Tensor::from_data(TensorData::new(sin, [seq, half]), device),
    )
}

/// Rotates interleaved pairs `(2i, 2i+1)` of `x [batch, heads, seq, head]`.
fn apply_rope(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    let [b, h, t, hs] = x.dims();
    let half = hs / 2;
    let pairs = x.reshape([b, h, t, half, 2]); // [batch, heads, seq, head/2, 2]
    let x0 = pairs.clone().narrow(4, 0, 1).reshape([b, h, t, half]); // [batch, heads, seq, head/2]
    let x1 = pairs.narrow(4, 1, 1).reshape([b, h, t, half]); // [batch, heads, seq, head/2]
    let cos = cos.clone().reshape([1, 1, t, half]); // [1, 1, seq, head/2]
    let sin = sin.clone().reshape([1, 1, t, half]); // [1, 1, seq, head/2]
    let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone(); // [batch, heads, seq, head/2]
    let r1 = x0 * sin + x1 * cos; // [batch, heads, seq, head/2]
    Tensor::stack::<5>(vec![r0, r1], 4).reshape([b, h, t, hs]) // [batch, heads, seq, head]
}

impl crate::eval::LogitsModel for Llama {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn logits(&mut self, batch: &[Vec<u32>]) -> Result<Vec<f32>> {
        super::tensor_to_vec(self.forward(batch)?)
    }
}

/// Step-by-step decoding on burn by recomputing the prefix (the reference engine; the native
/// runtime keeps a KV cache instead).
#[derive(Debug)]
pub struct LlamaStepper<'a> {
    model: &'a Llama,
    tokens: Vec<u32>,
}

impl<'a> LlamaStepper<'a> {
    /// A stepper over `model` with an empty prefix.
    pub fn new(model: &'a Llama) -> Self {
        LlamaStepper {
            model,
            tokens: Vec::new(),
        }
    }
}

impl crate::generate::StepModel for LlamaStepper<'_> {
    fn step(&mut self, token: u32, pos: usize) -> Result<Vec<f32>> {
        self.tokens.truncate(pos);
        self.tokens.push(token);
        let logits = self.model.forward(std::slice::from_ref(&self.tokens))?; // [1, seq, vocab]
        let [_, t, v] = logits.dims();
        super::tensor_to_vec(logits.narrow(1, t - 1, 1).reshape([v]))
    }
    fn max_positions(&self) -> usize {
        self.model.config.seq_len
    }
}
