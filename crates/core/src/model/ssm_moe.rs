//! The SsmMoe family in burn: tied embedding; L blocks of
//! `x += SSM(RMSNorm(x)); x += MoE(RMSNorm(x))`; final RMSNorm; classifier = embedding.
//!
//! SSM mixer (Mamba-style selective scan): `in_proj` d→2·d_inner (x, z); causal depthwise conv
//! (k = d_conv) + SiLU; `x_proj` d_inner→(dt_rank + 2N) giving Δ, B, C; `dt_proj` + bias, softplus;
//! `A = −exp(A_log)`; `y = scan(x, Δ, A, B, C) + D ⊙ x`; `y ⊙ SiLU(z)`; `out_proj`.
//! MoE: router d→E, softmax, top-k renormalised gates over E SwiGLU experts; Switch-style
//! load-balancing loss. Widths per layer and per expert come from the tensors.

use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::act_op::{silu, softplus};
pub use super::moe_routed::MoeMode;
use super::ops::{embed, linear, rms_norm};
use super::scan_op::scan_fused;
use super::ssm_scan::{ScanInputs, scan_chunked, scan_sequential};
use crate::config::SsmMoeConfig;
use crate::{Error, Result};

/// The selective-SSM mixer of one block.
#[derive(Module, Debug)]
pub struct Ssm {
    /// `[2·d_inner, d_model]`: rows `0..d_inner` make x, the rest make z.
    pub in_proj: Param<Tensor<2>>,
    /// Depthwise causal conv taps `[d_inner, d_conv]` (tap `d_conv−1` multiplies the current step).
    pub conv_weight: Param<Tensor<2>>,
    /// Conv bias `[d_inner]`.
    pub conv_bias: Param<Tensor<1>>,
    /// `[dt_rank + 2·N, d_inner]` → (Δ-rank, B, C).
    pub x_proj: Param<Tensor<2>>,
    /// `[d_inner, dt_rank]`.
    pub dt_proj: Param<Tensor<2>>,
    /// `[d_inner]`.
    pub dt_bias: Param<Tensor<1>>,
    /// `[d_inner, N]`; `A = −exp(A_log)`.
    pub a_log: Param<Tensor<2>>,
    /// Skip `[d_inner]`.
    pub d: Param<Tensor<1>>,
    /// `[d_model, d_inner]`.
    pub out_proj: Param<Tensor<2>>,
}

/// One SwiGLU expert: `w2(silu(w1 x) ⊙ w3 x)`.
#[derive(Module, Debug)]
pub struct Expert {
    /// Gate `[hidden, d_model]`.
    pub w1: Param<Tensor<2>>,
    /// Down `[d_model, hidden]`.
    pub w2: Param<Tensor<2>>,
    /// Up `[hidden, d_model]`.
    pub w3: Param<Tensor<2>>,
}

/// The mixture of experts of one block.
#[derive(Module, Debug)]
pub struct Moe {
    /// Router `[n_experts, d_model]`.
    pub router: Param<Tensor<2>>,
    /// The experts.
    pub experts: Vec<Expert>,
}

/// One block.
#[derive(Module, Debug)]
pub struct SsmMoeBlock {
    /// RMSNorm before the SSM `[d_model]`.
    pub ssm_norm: Param<Tensor<1>>,
    /// The SSM mixer.
    pub ssm: Ssm,
    /// RMSNorm before the MoE `[d_model]`.
    pub moe_norm: Param<Tensor<1>>,
    /// The MoE.
    pub moe: Moe,
}

/// How the training forward runs the selective scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMode {
    /// One step per timestep.
    Sequential,
    /// Chunks of the given length.
    Chunked(usize),
    /// One fused burn operation with a hand-written backward (see [`super::scan_op`]); the
    /// sequential recurrence in plain Rust over contiguous buffers.
    Fused,
}

impl ScanMode {
    /// Runs the scan of `s` in this formulation: `y [batch, seq, d_inner]`.
    pub fn run(self, s: &ScanInputs) -> Tensor<3> {
        match self {
            ScanMode::Sequential => scan_sequential(s),
            ScanMode::Chunked(k) => scan_chunked(s, k.max(1)),
            ScanMode::Fused => scan_fused(s),
        }
    }
}

/// The whole model.
#[derive(Module, Debug)]
pub struct SsmMoe {
    /// Token embedding `[vocab, d_model]`, also the classifier.
    pub tok_embeddings: Param<Tensor<2>>,
    /// The blocks.
    pub layers: Vec<SsmMoeBlock>,
    /// Final RMSNorm `[d_model]`.
    pub norm: Param<Tensor<1>>,
    /// Hyper-parameters.
    #[module(skip)]
    pub config: SsmMoeConfig,
    /// Scan formulation used by [`SsmMoe::forward`].
    #[module(skip)]
    pub scan: ScanMode,
    /// MoE formulation used by [`SsmMoe::forward`] ([`MoeMode::Routed`] unless set).
    #[module(skip)]
    pub moe: MoeMode,
}

/// Output of a training forward.
#[derive(Debug)]
pub struct SsmMoeOutput {
    /// `[batch, seq, vocab]`.
    pub logits: Tensor<3>,
    /// Mean load-balancing loss over layers (scalar `[1]`); 1.0 when perfectly balanced.
    pub balance_loss: Tensor<1>,
}

impl Ssm {
    /// `d_inner` of this layer.
    pub fn d_inner(&self) -> usize {
        self.d.dims()[0]
    }

    /// Full-sequence mixer: `h [batch, seq, d_model]` → `[batch, seq, d_model]`.
    pub fn forward(
        &self,
        h: Tensor<3>,
        scan: ScanMode,
        capture: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        let [bsz, t, _] = h.dims();
        let di = self.d_inner();
        let k = self.conv_weight.dims()[1];
        let n = self.a_log.dims()[1];
        let r = self.dt_proj.dims()[1];
        capture("in_proj", &h);
        let xz = linear(h, &self.in_proj); // [batch, seq, 2·d_inner]
        let x = xz.clone().narrow(2, 0, di); // [batch, seq, d_inner]
        let z = xz.narrow(2, di, di); // [batch, seq, d_inner]
        // Causal depthwise conv: out_t = Σ_j w[:, j] · x_{t−(k−1)+j} + bias.
        let pad = Tensor::<3>::zeros([bsz, k - 1, di], &x.device()); // [batch, k−1, d_inner]
        let xp = Tensor::cat(vec![pad, x], 1); // [batch, seq+k−1, d_inner]
        let w = self.conv_weight.val(); // [d_inner, k]
        let mut conv = self
            .conv_bias
            .val()
            .reshape([1, 1, di])
            .expand([bsz, t, di]); // [batch, seq, d_inner]
        for j in 0..k {
            conv =
                conv + xp.clone().narrow(1, j, t) * w.clone().narrow(1, j, 1).reshape([1, 1, di]);
        }
        let x = silu(conv); // [batch, seq, d_inner]
        capture("x_proj", &x);
        let dbc = linear(x.clone(), &self.x_proj); // [batch, seq, r + 2n]
        let dt = dbc.clone().narrow(2, 0, r); // [batch, seq, r]
        let b = dbc.clone().narrow(2, r, n); // [batch, seq, n]
        let c = dbc.narrow(2, r + n, n); // [batch, seq, n]
        capture("dt_proj", &dt);
        let delta = softplus(linear(dt, &self.dt_proj) + self.dt_bias.val().reshape([1, 1, di])); // [batch, seq, d_inner]
        let a = self.a_log.val().exp().neg(); // [d_inner, n]
        let s = ScanInputs {
            x,
            delta,
            a,
            b,
            c,
            d: self.d.val(),
        };
        let y = scan.run(&s); // [batch, seq, d_inner]
        let y = y * silu(z); // [batch, seq, d_inner]
        capture("out_proj", &y);
        linear(y, &self.out_proj) // [batch, seq, d_model]
    }
}

impl Moe {
    /// Routes `h [batch, seq, d_model]` to the top-k experts; returns (output, balance loss `[1]`).
    /// Experts run densely and are weighted by the renormalised top-k gates (see
    /// [`MoeMode`] for the routed form); `capture` sees every expert's input over all tokens.
    pub fn forward(
        &self,
        h: Tensor<3>,
        top_k: usize,
        capture: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> (Tensor<3>, Tensor<1>) {
        let [bsz, t, dm] = h.dims();
        capture("router", &h);
        let r = self.route(h.clone(), top_k);
        let gates = r.gates.clone(); // [batch, seq, E]
        let mut out = Tensor::<3>::zeros([bsz, t, dm], &h.device()); // [batch, seq, d_model]
        for (i, ex) in self.experts.iter().enumerate() {
            capture(&format!("experts.{i}.w1"), &h);
            let act = silu(linear(h.clone(), &ex.w1)) * linear(h.clone(), &ex.w3); // [batch, seq, hidden]
            capture(&format!("experts.{i}.w2"), &act);
            out = out + linear(act, &ex.w2) * gates.clone().narrow(2, i, 1); // [batch, seq, d_model]
        }
        let bl = self.balance_loss(&r, top_k);
        (out, bl)
    }
}

impl SsmMoe {
    /// Logits and balance loss for a batch of equal-length token rows (MoE as [`Self::moe`]).
    pub fn forward(&self, tokens: &[Vec<u32>]) -> Result<SsmMoeOutput> {
        self.forward_with(tokens, self.moe, &mut |_, _| {})
    }

    /// [`Self::forward`] with the dense MoE, handing `capture` the input of every linear layer
    /// as `(weight name, x [batch, seq, in])` for calibration (every expert sees every token).
    pub fn forward_captured(
        &self,
        tokens: &[Vec<u32>],
        capture: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Result<SsmMoeOutput> {
        self.forward_with(tokens, MoeMode::Dense, capture)
    }

    fn forward_with(
        &self,
        tokens: &[Vec<u32>],
        moe: MoeMode,
        capture: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Result<SsmMoeOutput> {
        let device = self.tok_embeddings.val().device();
        let c = &self.config;
        let mut x = embed(&self.tok_embeddings, tokens, &device)?; // [batch, seq, d_model]
        let mut balance = Tensor::<1>::zeros([1], &device);
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(x.clone(), &layer.ssm_norm, c.norm_eps); // [batch, seq, d_model]
            let mut cap =
                |n: &str, v: &Tensor<3>| capture(&format!("layers.{i}.ssm.{n}.weight"), v);
            x = x + layer.ssm.forward(h, self.scan, &mut cap); // [batch, seq, d_model]
            let h = rms_norm(x.clone(), &layer.moe_norm, c.norm_eps); // [batch, seq, d_model]
            let mut cap = |n: &str, v: &Tensor<3>| {
                capture(&format!("layers.{i}.moe.{n}.weight"), v);
                if let Some(e) = n.strip_suffix(".w1") {
                    capture(&format!("layers.{i}.moe.{e}.w3.weight"), v);
                }
            };
            let (y, bl) = match moe {
                MoeMode::Dense => layer.moe.forward(h, c.top_k, &mut cap),
                MoeMode::Routed => layer.moe.forward_routed(h, c.top_k)?,
            };
            x = x + y; // [batch, seq, d_model]
            balance = balance + bl;
        }
        let x = rms_norm(x, &self.norm, c.norm_eps); // [batch, seq, d_model]
        capture("tok_embeddings.weight", &x);
        let logits = linear(x, &self.tok_embeddings); // [batch, seq, vocab]
        Ok(SsmMoeOutput {
            logits,
            balance_loss: balance / self.layers.len().max(1) as f32,
        })
    }

    /// Checks a token batch's ids against the vocabulary.
    pub fn check_tokens(&self, tokens: &[Vec<u32>]) -> Result<()> {
        let v = self.config.vocab_size as u32;
        match tokens.iter().flatten().find(|&&t| t >= v) {
            Some(t) => Err(Error::invalid(format!(
                "token id {t} outside vocabulary of {v}"
            ))),
            None => Ok(()),
        }
    }
}

impl crate::eval::LogitsModel for SsmMoe {
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn logits(&mut self, batch: &[Vec<u32>]) -> Result<Vec<f32>> {
        super::tensor_to_vec(self.forward(batch)?.logits)
    }
}
