//! The selective scan of the SSM mixer, two equivalent formulations built from burn ops (a third,
//! fused one with a hand-written backward, is [`super::scan_op::scan_fused`]).
//!
//! With `ΔA_t = Δ_t ⊙ A` (≤ 0) and `u_t = (Δ_t ⊙ x_t) ⊗ B_t`, the recurrence is
//! `h_t = exp(ΔA_t) ⊙ h_{t−1} + u_t`, `y_t = h_t · C_t + D ⊙ x_t`.
//!
//! - [`scan_sequential`]: one step per timestep (≈7 small tensor ops each): the reference.
//! - [`scan_chunked`]: chunks of `K` steps; inside a chunk
//!   `h_t = exp(L_t) ⊙ h_in + Σ_{s≤t} exp(L_t − L_s) ⊙ u_s` with `L` the inclusive cumulative sum
//!   of `ΔA` over the chunk. `L_t − L_s ≤ 0` for `s ≤ t`, so every exponent is ≤ 0 (stable); the
//!   upper triangle is masked to −∞. `T/K` sequential steps instead of `T`.

use burn::tensor::{Bool, Tensor};

/// Inputs of a scan, all over `[batch, seq, …]`.
pub struct ScanInputs {
    /// Post-conv activations `[batch, seq, d_inner]`.
    pub x: Tensor<3>,
    /// Step sizes (after softplus) `[batch, seq, d_inner]`.
    pub delta: Tensor<3>,
    /// `A = −exp(A_log)` `[d_inner, n]`.
    pub a: Tensor<2>,
    /// Input matrix `[batch, seq, n]`.
    pub b: Tensor<3>,
    /// Output matrix `[batch, seq, n]`.
    pub c: Tensor<3>,
    /// Skip `[d_inner]`.
    pub d: Tensor<1>,
}

/// Reference scan: one recurrence step per timestep. Returns `y [batch, seq, d_inner]`.
///
/// Only `[batch, seq, d_inner]`/`[batch, seq, n]` tensors are sliced per step: burn's slice
/// backward writes a zero tensor the size of the sliced input, so slicing the expanded
/// `[batch, seq, d_inner, n]` tensors per step would cost O(seq²·d_inner·n) in the backward pass.
pub fn scan_sequential(s: &ScanInputs) -> Tensor<3> {
    let [bsz, t, di] = s.x.dims();
    let n = s.a.dims()[1];
    let a = s.a.clone().reshape([1, di, n]); // [1, d_inner, n]
    let dx = s.delta.clone() * s.x.clone(); // [batch, seq, d_inner]
    let mut h = Tensor::<3>::zeros([bsz, di, n], &s.x.device()); // [batch, d_inner, n]
    let mut ys = Vec::with_capacity(t);
    for step in 0..t {
        let d_t = s.delta.clone().narrow(1, step, 1).reshape([bsz, di, 1]); // [batch, d_inner, 1]
        let dx_t = dx.clone().narrow(1, step, 1).reshape([bsz, di, 1]); // [batch, d_inner, 1]
        let b_t = s.b.clone().narrow(1, step, 1).reshape([bsz, 1, n]); // [batch, 1, n]
        let c_t = s.c.clone().narrow(1, step, 1).reshape([bsz, 1, n]); // [batch, 1, n]
        h = (d_t * a.clone()).exp() * h + dx_t * b_t; // [batch, d_inner, n]
        ys.push((h.clone() * c_t).sum_dim(2).reshape([bsz, 1, di])); // [batch, 1, d_inner]
    }
    Tensor::cat(ys, 1) + s.x.clone() * s.d.clone().reshape([1, 1, di]) // [batch, seq, d_inner]
}

/// Chunked scan with chunks of `chunk` steps (see module docs). Same result as
/// [`scan_sequential`] up to float rounding. Like it, it slices only the small per-step inputs.
pub fn scan_chunked(s: &ScanInputs, chunk: usize) -> Tensor<3> {
    let [bsz, t, di] = s.x.dims();
    let n = s.a.dims()[1];
    let device = s.x.device();
    let a = s.a.clone().reshape([1, 1, di, n]); // [1, 1, d_inner, n]
    let dx = s.delta.clone() * s.x.clone(); // [batch, seq, d_inner]
    let mut h = Tensor::<3>::zeros([bsz, di, n], &device); // [batch, d_inner, n]
    let mut ys = Vec::with_capacity(t.div_ceil(chunk));
    let mut start = 0;
    while start < t {
        let k = chunk.min(t - start);
        let d_c = s.delta.clone().narrow(1, start, k).reshape([bsz, k, di, 1]); // [batch, k, d_inner, 1]
        let dx_c = dx.clone().narrow(1, start, k).reshape([bsz, k, di, 1]); // [batch, k, d_inner, 1]
        let b_c = s.b.clone().narrow(1, start, k).reshape([bsz, k, 1, n]); // [batch, k, 1, n]
        let l = (d_c * a.clone()).cumsum(1); // [batch, k, d_inner, n]
        let u_c = dx_c * b_c; // [batch, k, d_inner, n]
        // diff[t, s] = L_t − L_s
        let diff = l.clone().reshape([bsz, k, 1, di, n]) - l.clone().reshape([bsz, 1, k, di, n]); // [batch, k(t), k(s), d_inner, n]
        let upper = Tensor::<2, Bool>::tril_mask([k, k], 0, &device)
            .reshape([1, k, k, 1, 1])
            .expand([bsz, k, k, di, n]);
        let w = diff.mask_fill(upper, f32::NEG_INFINITY).exp(); // [batch, k, k, d_inner, n]
        let within = (w * u_c.reshape([bsz, 1, k, di, n]))
            .sum_dim(2)
            .reshape([bsz, k, di, n]); // [batch, k, d_inner, n]
        let hs = within + l.exp() * h.reshape([bsz, 1, di, n]); // [batch, k, d_inner, n]
        let c_c = s.c.clone().narrow(1, start, k).reshape([bsz, k, 1, n]); // [batch, k, 1, n]
        ys.push((hs.clone() * c_c).sum_dim(3).reshape([bsz, k, di])); // [batch, k, d_inner]
        h = hs.narrow(1, k - 1, 1).reshape([bsz, di, n]);
        start += k;
    }
    Tensor::cat(ys, 1) + s.x.clone() * s.d.clone().reshape([1, 1, di]) // [batch, seq, d_inner]
}
