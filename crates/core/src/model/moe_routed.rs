//! The MoE's two formulations ([`MoeMode`]): dense (every expert on every token, weighted by the
//! top-k gates, zero for unchosen experts) and routed (per expert, gather its tokens → SwiGLU
//! GEMMs → weighted scatter-add). Both share the router ([`Moe::route`]) and the balance loss;
//! they give the same outputs and gradients up to float rounding: an unchosen expert's gate is
//! exactly 0 and the top-k mask is detached, so the dense form's extra terms contribute nothing.

use burn::tensor::activation::softmax;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use super::act_op::silu;
use super::ops::linear;
use super::ssm_moe::Moe;
use crate::Result;

/// How the training forward evaluates the experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoeMode {
    /// Every expert on every token (kept for comparison and for calibration's captures).
    Dense,
    /// Only the routed tokens per expert (the default: top-k of E experts' work).
    #[default]
    Routed,
}

/// The router's outputs for `h [batch, seq, d_model]`.
pub struct Routing {
    /// Router probabilities `[batch, seq, E]`.
    pub probs: Tensor<3>,
    /// Top-k mask `[batch, seq, E]` (1 = chosen; detached).
    pub mask: Tensor<3>,
    /// Renormalised top-k gates `[batch, seq, E]` (0 for unchosen experts).
    pub gates: Tensor<3>,
}

impl Moe {
    /// Router softmax, top-k mask and renormalised gates of `h [batch, seq, d_model]`.
    pub fn route(&self, h: Tensor<3>, top_k: usize) -> Routing {
        let [bsz, t, _] = h.dims();
        let e = self.experts.len();
        let k = top_k.clamp(1, e);
        let probs = softmax(linear(h, &self.router), 2); // [batch, seq, E]
        let kth = probs.clone().topk(k, 2).narrow(2, k - 1, 1); // [batch, seq, 1]
        let mask = probs
            .clone()
            .greater_equal(kth.expand([bsz, t, e]))
            .float()
            .detach(); // [batch, seq, E]
        let gates = probs.clone() * mask.clone(); // [batch, seq, E]
        let gates = gates.clone() / gates.sum_dim(2); // [batch, seq, E]
        Routing { probs, mask, gates }
    }

    /// Switch loss of a routing: `E · Σ_e (fraction of routed slots to e) · (mean router prob of
    /// e)` (scalar `[1]`).
    pub fn balance_loss(&self, r: &Routing, top_k: usize) -> Tensor<1> {
        let [bsz, t, e] = r.probs.dims();
        let k = top_k.clamp(1, e);
        let tokens = (bsz * t) as f32;
        let frac = r.mask.clone().sum_dim(1).sum_dim(0).reshape([e]) / (tokens * k as f32); // [E]
        let mean_p = r.probs.clone().sum_dim(1).sum_dim(0).reshape([e]) / tokens; // [E]
        (frac * mean_p).sum() * e as f32
    }

    /// The routed formulation: `(output [batch, seq, d_model], balance loss [1])`. Each expert
    /// runs on the tokens that chose it; an expert no token chose still gets a (zero) gradient,
    /// as in the dense form, so the optimizer treats its weights alike.
    pub fn forward_routed(&self, h: Tensor<3>, top_k: usize) -> Result<(Tensor<3>, Tensor<1>)> {
        let [bsz, t, dm] = h.dims();
        let e = self.experts.len();
        let rows = bsz * t;
        let device = h.device();
        let r = self.route(h.clone(), top_k);
        let chosen = super::tensor_to_vec(r.mask.clone().reshape([rows, e]))?; // [rows·E]
        let hf = h.reshape([rows, dm]); // [rows, d_model]
        let gf = r.gates.clone().reshape([rows, e]); // [rows, E]
        let mut out = Tensor::<2>::zeros([rows, dm], &device); // [rows, d_model]
        for (i, ex) in self.experts.iter().enumerate() {
            let idx: Vec<i64> = (0..rows)
                .filter(|&row| chosen[row * e + i] > 0.5)
                .map(|row| row as i64)
                .collect();
            if idx.is_empty() {
                let zero = (ex.w1.val().sum() + ex.w2.val().sum() + ex.w3.val().sum()) * 0.0; // [1]
                out = out + zero.reshape([1, 1]);
                continue;
            }
            let n = idx.len();
            let it = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device); // [n]
            let x = hf.clone().select(0, it.clone()); // [n, d_model]
            let act =
                silu(x.clone().matmul(ex.w1.val().transpose())) * x.matmul(ex.w3.val().transpose()); // [n, hidden]
            let g = gf.clone().narrow(1, i, 1).select(0, it.clone()); // [n, 1]
            let y = act.matmul(ex.w2.val().transpose()) * g; // [n, d_model]
            out = out.select_assign(0, it, y, IndexingUpdateOp::Add);
        }
        let bl = self.balance_loss(&r, top_k);
        Ok((out.reshape([bsz, t, dm]), bl))
    }
}
