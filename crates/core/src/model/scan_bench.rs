//! Timing helpers for `cargo xtask bench-train --breakdown`: where a training step's time goes
//! (forward, backward, optimizer) and what the selective scan alone costs forward and backward.
//! Only measures; prints nothing.

use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};

use super::ssm_moe::{ScanMode, SsmMoe};
use super::ssm_scan::ScanInputs;
use crate::Result;
use crate::data::Rng;
use crate::train::{TrainConfig, Trainable, sample_batch, token_loss};

/// Seconds spent in each part of the timed training steps (summed over the steps).
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTimes {
    /// Forward pass and loss (model forward, cross-entropy, balance loss).
    pub forward: f64,
    /// `loss.backward()`.
    pub backward: f64,
    /// Gradients to parameters and the AdamW step (clipping included).
    pub optimizer: f64,
}

/// Runs `steps` training steps of `model` (on an autodiff device) the way
/// [`crate::train::train`] does (AdamW, clipping, balance loss; no distillation, no validation)
/// and times each part. Returns the trained model and the times.
pub fn time_train_steps(
    mut model: SsmMoe,
    stream: &[u32],
    cfg: &TrainConfig,
    steps: usize,
) -> Result<(SsmMoe, StepTimes)> {
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay)
        .with_epsilon(cfg.adam_epsilon)
        .with_grad_clipping((cfg.grad_clip > 0.0).then_some(
            burn::optim::grad_clipping::GradientClippingConfig::Norm(cfg.grad_clip),
        ))
        .init();
    let mut rng = Rng::new(cfg.seed ^ 0x5157_1500);
    let mut t = StepTimes::default();
    for step in 0..steps {
        let (inputs, targets) = sample_batch(stream, cfg.batch_size, cfg.seq_len, 1, &mut rng);
        let t0 = Instant::now();
        let (logits, aux) = model.train_forward(&inputs)?;
        let mut loss = token_loss(logits, &targets, None)?;
        if let Some(aux) = aux {
            loss = loss + aux * cfg.balance_coef;
        }
        let _ = super::tensor_to_vec(loss.clone().detach())?; // waits for the forward
        let t1 = Instant::now();
        let grads = loss.backward();
        let t2 = Instant::now();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(cfg.lr_at(step), model, grads);
        let _ = super::tensor_to_vec(model.norm.val())?; // waits for the update
        let t3 = Instant::now();
        t.forward += (t1 - t0).as_secs_f64();
        t.backward += (t2 - t1).as_secs_f64();
        t.optimizer += (t3 - t2).as_secs_f64();
    }
    Ok((model, t))
}

/// Mean seconds of one scan forward and of its backward (loss `sum(y · R)`), over `reps` runs
/// of `mode` on random inputs of the given shape on `device` (an autodiff device).
pub fn time_scan(
    mode: ScanMode,
    [batch, seq, d_inner, n]: [usize; 4],
    device: &Device,
    reps: usize,
) -> Result<(f64, f64)> {
    let u = |lo: f64, hi: f64| Distribution::Uniform(lo, hi);
    let s = ScanInputs {
        x: Tensor::random([batch, seq, d_inner], u(-1.0, 1.0), device).require_grad(),
        delta: Tensor::random([batch, seq, d_inner], u(0.001, 0.2), device).require_grad(),
        a: Tensor::random([d_inner, n], u(-2.0, -0.1), device).require_grad(),
        b: Tensor::random([batch, seq, n], u(-1.0, 1.0), device).require_grad(),
        c: Tensor::random([batch, seq, n], u(-1.0, 1.0), device).require_grad(),
        d: Tensor::random([d_inner], u(0.5, 1.5), device).require_grad(),
    };
    let r = Tensor::<3>::random([batch, seq, d_inner], u(-1.0, 1.0), device);
    let (mut fwd, mut bwd) = (0.0, 0.0);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        let loss = (mode.run(&s) * r.clone()).sum();
        let _ = super::tensor_to_vec(loss.clone().detach())?;
        let t1 = Instant::now();
        let grads = loss.backward();
        let _ = super::tensor_to_vec(s.a.grad(&grads).expect("a has a gradient"))?;
        let t2 = Instant::now();
        fwd += (t1 - t0).as_secs_f64();
        bwd += (t2 - t1).as_secs_f64();
    }
    let k = reps.max(1) as f64;
    Ok((fwd / k, bwd / k))
}

/// Mean seconds of the fused scan's kernels alone (no burn: plain buffers in and out) forward
/// and backward, over `reps` runs on random inputs of the given shape, on the threads and
/// instruction set [`super::scan_op::scan_fused`] uses.
pub fn time_scan_kernel([batch, seq, d_inner, n]: [usize; 4], reps: usize) -> (f64, f64) {
    use super::scan_kernel::{
        ScanBufs, ScanDims, ScanIsa, default_threads, scan_backward, scan_forward,
    };
    let dims = ScanDims {
        batch,
        seq,
        d_inner,
        n,
    };
    let mut rng = Rng::new(3);
    let mut v = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..len).map(|_| lo + (hi - lo) * rng.f32()).collect()
    };
    let (bt, di) = (batch * seq, d_inner);
    let (x, delta, a) = (
        v(bt * di, -1.0, 1.0),
        v(bt * di, 0.001, 0.2),
        v(di * n, -2.0, -0.1),
    );
    let (b, c, d, dy) = (
        v(bt * n, -1.0, 1.0),
        v(bt * n, -1.0, 1.0),
        v(di, 0.5, 1.5),
        v(bt * di, -1.0, 1.0),
    );
    let bufs = ScanBufs {
        x: &x,
        delta: &delta,
        a: &a,
        b: &b,
        c: &c,
        d: &d,
    };
    let (threads, isa) = (default_threads(batch), ScanIsa::detect());
    let (mut fwd, mut bwd) = (0.0, 0.0);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        std::hint::black_box(scan_forward(dims, &bufs, threads, isa));
        let t1 = Instant::now();
        std::hint::black_box(scan_backward(dims, &bufs, &dy, threads, isa));
        fwd += (t1 - t0).as_secs_f64();
        bwd += t1.elapsed().as_secs_f64();
    }
    let k = reps.max(1) as f64;
    (fwd / k, bwd / k)
}
