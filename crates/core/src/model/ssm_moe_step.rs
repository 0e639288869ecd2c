//! Recurrent decoding of SsmMoe on burn: O(1) state per layer (the last `d_conv − 1` conv inputs
//! and `h [d_inner, N]`), one token at a time. Equal to the full-sequence forward (tested).

use burn::tensor::Tensor;

use super::act_op::{silu, softplus};
use super::ops::{embed, linear, rms_norm};
use super::ssm_moe::{Ssm, SsmMoe};
use crate::Result;

/// Per-layer recurrent state.
#[derive(Debug, Clone)]
struct LayerState {
    /// Last `k−1` pre-conv inputs `[1, k−1, d_inner]`.
    window: Tensor<3>,
    /// SSM state `[d_inner, N]`.
    h: Tensor<2>,
}

impl Ssm {
    fn step(&self, h_in: Tensor<3>, st: &mut LayerState) -> Tensor<3> {
        let di = self.d_inner();
        let k = self.conv_weight.dims()[1];
        let n = self.a_log.dims()[1];
        let r = self.dt_proj.dims()[1];
        let xz = linear(h_in, &self.in_proj); // [1, 1, 2·d_inner]
        let x = xz.clone().narrow(2, 0, di); // [1, 1, d_inner]
        let z = xz.narrow(2, di, di); // [1, 1, d_inner]
        let full = Tensor::cat(vec![st.window.clone(), x], 1); // [1, k, d_inner]
        st.window = full.clone().narrow(1, 1, k - 1);
        let w = self.conv_weight.val().transpose().reshape([1, k, di]); // [1, k, d_inner]
        let conv = (full * w).sum_dim(1) + self.conv_bias.val().reshape([1, 1, di]); // [1, 1, d_inner]
        let x = silu(conv); // [1, 1, d_inner]
        let dbc = linear(x.clone(), &self.x_proj); // [1, 1, r + 2n]
        let dt = dbc.clone().narrow(2, 0, r); // [1, 1, r]
        let b = dbc.clone().narrow(2, r, n).reshape([1, n]); // [1, n]
        let c = dbc.narrow(2, r + n, n).reshape([1, n]); // [1, n]
        let delta = softplus(linear(dt, &self.dt_proj) + self.dt_bias.val().reshape([1, 1, di]))
            .reshape([di, 1]); // [d_inner, 1]
        let a = self.a_log.val().exp().neg(); // [d_inner, n]
        let xv = x.reshape([di, 1]); // [d_inner, 1]
        st.h = (delta.clone() * a).exp() * st.h.clone() + (delta * xv.clone()) * b; // [d_inner, n]
        let y = (st.h.clone() * c).sum_dim(1) + self.d.val().reshape([di, 1]) * xv; // [d_inner, 1]
        let y = y.reshape([1, 1, di]) * silu(z); // [1, 1, d_inner]
        linear(y, &self.out_proj) // [1, 1, d_model]
    }
}

/// Token-by-token decoding with recurrent state.
#[derive(Debug)]
pub struct SsmMoeStepper<'a> {
    model: &'a SsmMoe,
    state: Vec<LayerState>,
}

impl<'a> SsmMoeStepper<'a> {
    /// A stepper at position 0.
    pub fn new(model: &'a SsmMoe) -> Self {
        let mut s = SsmMoeStepper {
            model,
            state: Vec::new(),
        };
        s.reset();
        s
    }

    /// Clears the state (back to position 0).
    pub fn reset(&mut self) {
        let device = self.model.tok_embeddings.val().device();
        self.state = self
            .model
            .layers
            .iter()
            .map(|l| {
                let di = l.ssm.d_inner();
                let k = l.ssm.conv_weight.dims()[1];
                let n = l.ssm.a_log.dims()[1];
                LayerState {
                    window: Tensor::zeros([1, k - 1, di], &device),
                    h: Tensor::zeros([di, n], &device),
                }
            })
            .collect();
    }

    /// Logits `[vocab]` after consuming `token`, as a burn tensor.
    pub fn step_tensor(&mut self, token: u32) -> Result<Tensor<1>> {
        let m = self.model;
        let c = &m.config;
        let device = m.tok_embeddings.val().device();
        let mut x = embed(&m.tok_embeddings, &[vec![token]], &device)?; // [1, 1, d_model]
        for (layer, st) in m.layers.iter().zip(self.state.iter_mut()) {
            let h = rms_norm(x.clone(), &layer.ssm_norm, c.norm_eps); // [1, 1, d_model]
            x = x + layer.ssm.step(h, st); // [1, 1, d_model]
            let h = rms_norm(x.clone(), &layer.moe_norm, c.norm_eps); // [1, 1, d_model]
            let (y, _) = layer.moe.forward(h, c.top_k, &mut |_, _| {});
            x = x + y; // [1, 1, d_model]
        }
        let x = rms_norm(x, &m.norm, c.norm_eps); // [1, 1, d_model]
        Ok(linear(x, &m.tok_embeddings).reshape([c.vocab_size])) // [vocab]
    }
}

impl crate::generate::StepModel for SsmMoeStepper<'_> {
    fn step(&mut self, token: u32, pos: usize) -> Result<Vec<f32>> {
        if pos == 0 {
            self.reset();
        }
        super::tensor_to_vec(self.step_tensor(token)?)
    }
    fn max_positions(&self) -> usize {
        usize::MAX
    }
}
