//! The SsmMoe family on the native runtime (equal to
//! `squish_core::model::ssm_moe::SsmMoe`): per block
//! `x += SSM(RMSNorm(x)); x += MoE(RMSNorm(x))`, tied classifier.
//!
//! SSM: `in_proj` (norm fused) → x ‖ z; causal depthwise conv over a rolling
//! window of the last `d_conv − 1` inputs + SiLU; `x_proj` → (dt, B, C);
//! `Δ = softplus(dt_proj·dt + bias)`; one fused selective-scan step per token on
//! the `[d_inner, N]` state; `y ⊙ SiLU(z)`; `out_proj`. MoE: softmax router,
//! experts with probability ≥ the k-th largest (burn's tie rule), gates
//! renormalised over the chosen; tokens are grouped per expert so only routed
//! experts run, each as one GEMM over its tokens. Widths per layer / expert come
//! from the tensor shapes (pruned checkpoints).
//!
//! This file holds the weights, state and buffers; `forward.rs` the pass itself (five pool
//! phases per layer, split by tokens or by channels).

mod forward;

use squish_core::checkpoint::Weights;
use squish_core::config::SsmMoeConfig;
use squish_core::model::ssm_moe_weights::{expert_name, experts_in_layer, router_name, ssm_name};
use squish_core::model::structure::residual_width;
use squish_core::{Error, Result};

use super::load;
use super::{Exec, Family, Head, Logits, SwiGlu, reserve};
use crate::PackedWeight;
use crate::pool::split;
use crate::scratch::Scratch;
use std::sync::Mutex;

/// One block's weights and recurrent state.
#[derive(Debug)]
struct Layer {
    /// Inner width of this layer.
    di: usize,
    /// `[d]`.
    ssm_norm: Vec<f32>,
    /// `[2·di, d]`.
    in_proj: PackedWeight,
    /// The channel-wise SSM parameters and state, in one contiguous part per thread.
    chans: Vec<Mutex<Chans>>,
    /// `[r + 2N, di]`.
    x_proj: PackedWeight,
    /// `[di, r]`.
    dt_proj: PackedWeight,
    /// `[d, di]`.
    out_proj: PackedWeight,
    /// `[d]`.
    moe_norm: Vec<f32>,
    /// `[E, d]`.
    router: PackedWeight,
    /// The experts (uneven hidden widths allowed).
    experts: Vec<SwiGlu>,
}

/// Channels `c0..c1` (width `w`) of one layer's conv, Δ bias, scan parameters and state. A
/// layer is cut into one part per thread at multiples of 16 channels, so every channel sees the
/// same SIMD or scalar operations as in one part: the outputs do not depend on the split.
#[derive(Debug)]
struct Chans {
    c0: usize,
    c1: usize,
    /// `[k, w]` conv taps, transposed (tap `k−1` on the current step).
    taps: Vec<f32>,
    /// `[w]`.
    conv_b: Vec<f32>,
    /// `[w]`.
    dt_bias: Vec<f32>,
    /// `[N, w]` `A = −exp(A_log)`, transposed.
    a: Vec<f32>,
    /// `[w]` skip.
    dskip: Vec<f32>,
    /// `[k−1, w]` last pre-conv inputs, oldest first.
    win: Vec<f32>,
    /// `[N, w]` SSM state (transposed: the scan runs 8 channels per register).
    h: Vec<f32>,
}

impl Chans {
    /// Columns `c0..c1` of the `[rows, di]` matrix `m`.
    fn cols(m: &[f32], di: usize, c0: usize, c1: usize) -> Vec<f32> {
        m.chunks_exact(di.max(1))
            .flat_map(|r| r[c0..c1].iter().copied())
            .collect()
    }

    /// Part `part` of `parts` of a layer given its full `[k, di]` taps, `[N, di]` A, and `[di]`
    /// vectors.
    #[allow(clippy::too_many_arguments)]
    fn new(
        part: usize,
        parts: usize,
        di: usize,
        k: usize,
        ns: usize,
        taps: &[f32],
        a: &[f32],
        conv_b: &[f32],
        dt_bias: &[f32],
        dskip: &[f32],
    ) -> Chans {
        let (c0, c1) = split(di, parts, part, 16);
        let w = c1 - c0;
        Chans {
            c0,
            c1,
            taps: Chans::cols(taps, di, c0, c1),
            conv_b: conv_b[c0..c1].to_vec(),
            dt_bias: dt_bias[c0..c1].to_vec(),
            a: Chans::cols(a, di, c0, c1),
            dskip: dskip[c0..c1].to_vec(),
            win: vec![0.0; (k - 1) * w],
            h: vec![0.0; ns * w],
        }
    }
}

/// Smallest scan (`tokens · d_inner · N`) whose channel parts run on the worker pool.
const SSM_PAR_MIN: usize = 1 << 15;

/// SsmMoe weights, state and preallocated activations.
#[derive(Debug)]
pub(crate) struct SsmRt {
    head: Head,
    layers: Vec<Layer>,
    eps: f32,
    cap: usize,
    k: usize,
    ns: usize,
    r: usize,
    top_k: usize,
    /// `[cap, d]` residual stream.
    x: Vec<f32>,
    /// `[cap, 2·di_max]` in_proj output x ‖ z.
    xz: Vec<f32>,
    /// `[cap, di_max]` conv + SiLU output.
    xc: Vec<f32>,
    /// `[cap, r + 2N]` x_proj output (dt, B, C).
    dbc: Vec<f32>,
    /// `[cap, r]` dt part, contiguous.
    dt: Vec<f32>,
    /// `[cap, di_max]` Δ.
    delta: Vec<f32>,
    /// `[cap, di_max]` scan output.
    y: Vec<f32>,
    /// `[cap, d]` projection output.
    o: Vec<f32>,
    /// `[cap, d]` MoE-normed input.
    hn: Vec<f32>,
    /// `[cap, E_max]` router logits → probabilities.
    rl: Vec<f32>,
    /// `[cap, d]` gathered expert inputs.
    g: Vec<f32>,
    /// `[cap, h_max]` expert hidden activations.
    hid: Vec<f32>,
    /// `[cap, d]` one expert's output.
    eo: Vec<f32>,
    /// `[cap, d]` gated sum of expert outputs.
    moe: Vec<f32>,
    /// One per thread: what a part of the token-split phases needs for itself.
    parts: Vec<Mutex<PartBufs>>,
    /// The classifier's scratch.
    s: Scratch,
}

/// The buffers one token range of a prefill (or the one thread) works in: the matmuls' staging
/// scratch and the MoE routing.
#[derive(Debug)]
struct PartBufs {
    s: Scratch,
    /// `[E_max]` sorted probabilities of one token.
    sorted: Vec<f32>,
    /// Per expert: (token within the range, gate) routed to it; capacity `cap` each.
    routes: Vec<Vec<(usize, f32)>>,
}

impl SsmRt {
    /// Loads and repacks every tensor; per-layer `d_inner` and expert count and
    /// per-expert widths are read from the shapes.
    /// `threads` is the number of channel parts per layer.
    pub fn load(c: &SsmMoeConfig, w: &Weights, cap: usize, threads: usize) -> Result<Self> {
        let d = residual_width(w, c.vocab_size)?; // d_model from the shapes (width pruning)
        let (ns, r, k) = (c.d_state, c.dt_rank, c.d_conv);
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let di = load::dim0(w, &ssm_name(i, "D"))?;
            let ne = experts_in_layer(w, i);
            if ne == 0 {
                return Err(Error::tensor(
                    expert_name(i, 0, "w1"),
                    "layer has no experts",
                ));
            }
            let experts = (0..ne)
                .map(|e| {
                    let n = ["w1", "w2", "w3"].map(|m| expert_name(i, e, m));
                    SwiGlu::load(w, [&n[0], &n[1], &n[2]], d)
                })
                .collect::<Result<Vec<_>>>()?;
            let a_log = load::vector(w, &ssm_name(i, "A_log"), &[di, ns])?;
            let conv = load::vector(w, &ssm_name(i, "conv.weight"), &[di, k])?;
            let taps = transpose(&conv, di, k);
            let a: Vec<f32> = transpose(&a_log, di, ns).iter().map(|v| -v.exp()).collect();
            let conv_b = load::vector(w, &ssm_name(i, "conv.bias"), &[di])?;
            let dt_bias = load::vector(w, &ssm_name(i, "dt_proj.bias"), &[di])?;
            let dskip = load::vector(w, &ssm_name(i, "D"), &[di])?;
            let parts = threads.max(1);
            let chans = (0..parts)
                .map(|p| {
                    Mutex::new(Chans::new(
                        p, parts, di, k, ns, &taps, &a, &conv_b, &dt_bias, &dskip,
                    ))
                })
                .collect();
            layers.push(Layer {
                di,
                ssm_norm: load::vector(w, &format!("layers.{i}.ssm_norm.weight"), &[d])?,
                in_proj: load::matrix(w, &ssm_name(i, "in_proj.weight"), 2 * di, d)?,
                chans,
                x_proj: load::matrix(w, &ssm_name(i, "x_proj.weight"), r + 2 * ns, di)?,
                dt_proj: load::matrix(w, &ssm_name(i, "dt_proj.weight"), di, r)?,
                out_proj: load::matrix(w, &ssm_name(i, "out_proj.weight"), d, di)?,
                moe_norm: load::vector(w, &format!("layers.{i}.moe_norm.weight"), &[d])?,
                router: load::matrix(w, &router_name(i), ne, d)?,
                experts,
            });
        }
        let head = Head::load(w, c.vocab_size, d, c.norm_eps, None)?;
        let dimax = layers.iter().map(|l| l.di).max().unwrap_or(0);
        let emax = layers.iter().map(|l| l.experts.len()).max().unwrap_or(0);
        let hmax = layers
            .iter()
            .flat_map(|l| l.experts.iter().map(|e| e.hidden))
            .max()
            .unwrap_or(0);
        // Every part's scratch can stage any matmul (and SwiGLU) of the model for `cap` tokens.
        let part_scratch = || {
            let mut s = Scratch::new();
            for l in &layers {
                let ws = [&l.in_proj, &l.x_proj, &l.dt_proj, &l.out_proj, &l.router];
                reserve(
                    &mut s,
                    ws.into_iter()
                        .chain(l.experts.iter().flat_map(|e| e.weights())),
                    cap,
                );
                l.experts.iter().for_each(|e| e.reserve(&mut s, cap));
            }
            s
        };
        let parts = (0..threads.max(1))
            .map(|_| {
                Mutex::new(PartBufs {
                    s: part_scratch(),
                    sorted: vec![0.0; emax],
                    routes: (0..emax).map(|_| Vec::with_capacity(cap)).collect(),
                })
            })
            .collect();
        let mut s = Scratch::new();
        reserve(&mut s, [&head.cls], cap);
        Ok(SsmRt {
            layers,
            eps: c.norm_eps,
            cap,
            k,
            ns,
            r,
            top_k: c.top_k,
            x: vec![0.0; cap * d],
            xz: vec![0.0; cap * 2 * dimax],
            xc: vec![0.0; cap * dimax],
            dbc: vec![0.0; cap * (r + 2 * ns)],
            dt: vec![0.0; cap * r],
            delta: vec![0.0; cap * dimax],
            y: vec![0.0; cap * dimax],
            o: vec![0.0; cap * d],
            hn: vec![0.0; cap * d],
            rl: vec![0.0; cap * emax],
            g: vec![0.0; cap * d],
            hid: vec![0.0; cap * hmax],
            eo: vec![0.0; cap * d],
            moe: vec![0.0; cap * d],
            parts,
            s,
            head,
        })
    }
}

impl Family for SsmRt {
    fn cap(&self) -> usize {
        self.cap
    }
    fn max_positions(&self) -> usize {
        usize::MAX
    }
    fn can_rewind(&self) -> bool {
        false
    }
    fn reset(&mut self) {
        for l in &mut self.layers {
            for c in &mut l.chans {
                let c = c.get_mut().unwrap_or_else(|e| e.into_inner());
                c.win.fill(0.0);
                c.h.fill(0.0);
            }
        }
    }

    fn forward(&mut self, ex: &Exec, tokens: &[u32], _pos0: usize, out: Logits<'_>) -> Result<()> {
        self.run(ex, tokens, out)
    }
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
        .collect()
}
