//! Training in burn: AdamW, linear warmup + cosine decay, gradient clipping, an optional MoE
//! balance loss and an optional distillation term (KL to a teacher's logits, reused by pruning
//! recovery and QAT), periodic validation with nats/token.
//!
//! Batches are windows of `seq_len + 1` tokens at seeded random offsets in the tokenized training
//! stream; the first token of each window is replaced by BOS, as the `llama-cpp` evaluation
//! protocol does with its chunks, so training and evaluation see the same kind of input.
//!
//! Each step's batch is split into [`TrainConfig::micro_batches`] micro-batches run on up to
//! [`crate::threads::threads`] threads ([`step`]); the same config and seed give the same weights,
//! bit for bit, for any thread count.

pub mod loss_kernel;
mod loss_op;
pub mod step;

pub use loss_kernel::Distill;
pub use loss_op::{token_loss, try_token_loss};

use burn::module::Module;
use burn::optim::{AdamWConfig, grad_clipping::GradientClippingConfig};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::Rng;
use crate::model::llama::Llama;
use crate::model::ssm_moe::SsmMoe;
use crate::{Error, Result};

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    #[serde(default)]
    pub min_lr: f64,
    /// Linear warmup steps.
    #[serde(default)]
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay.
    #[serde(default = "default_wd")]
    pub weight_decay: f32,
    /// Global gradient-norm clip (0 = off).
    #[serde(default = "default_clip")]
    pub grad_clip: f32,
    /// Weight of the MoE load-balancing loss.
    #[serde(default = "default_balance")]
    pub balance_coef: f32,
    /// Weight of the distillation KL term (0 = plain cross-entropy).
    #[serde(default)]
    pub distill_alpha: f32,
    /// Distillation temperature.
    #[serde(default = "default_temp")]
    pub distill_temperature: f32,
    /// Validate every this many steps (0 = only at the end).
    #[serde(default)]
    pub eval_every: usize,
    /// Validation chunks (of `seq_len`) per evaluation.
    #[serde(default = "default_eval_chunks")]
    pub eval_chunks: usize,
    /// Seed of the batch sampler.
    #[serde(default)]
    pub seed: u64,
    /// AdamW ε (burn's default 1e-5; omitted from the serialized config at that value, so
    /// existing configs keep their hashes). Small-loss fine-tuning (QAT/distillation: gradients
    /// of 1e-6–1e-5) wants PyTorch's 1e-8, or ε damps most updates.
    #[serde(
        default = "default_adam_epsilon",
        skip_serializing_if = "is_default_adam_epsilon"
    )]
    pub adam_epsilon: f32,
    /// Micro-batches per step (a fixed split of the batch, independent of the thread count; the
    /// unit of data parallelism). Default 2, omitted from the serialized config at that value.
    #[serde(
        default = "default_micro_batches",
        skip_serializing_if = "is_default_micro_batches"
    )]
    pub micro_batches: usize,
}

/// The default [`TrainConfig::micro_batches`].
pub const DEFAULT_MICRO_BATCHES: usize = 2;

fn default_micro_batches() -> usize {
    DEFAULT_MICRO_BATCHES
}

fn is_default_micro_batches(m: &usize) -> bool {
    *m == DEFAULT_MICRO_BATCHES
}

/// burn's AdamW default ε.
pub const DEFAULT_ADAM_EPSILON: f32 = 1e-5;

fn default_adam_epsilon() -> f32 {
    DEFAULT_ADAM_EPSILON
}

fn is_default_adam_epsilon(e: &f32) -> bool {
    *e == DEFAULT_ADAM_EPSILON
}

fn default_wd() -> f32 {
    0.1
}
fn default_clip() -> f32 {
    1.0
}
fn default_balance() -> f32 {
    0.01
}
fn default_temp() -> f32 {
    1.0
}
fn default_eval_chunks() -> usize {
    32
}

impl TrainConfig {
    /// The learning rate at `step` (0-based): linear warmup, then cosine to `min_lr`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = (self.steps.saturating_sub(self.warmup_steps)).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min_lr
            + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 || self.seq_len < 2 {
            return Err(Error::invalid(
                "train: steps and batch_size must be > 0 and seq_len ≥ 2",
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.min_lr < 0.0 || self.min_lr > self.lr {
            return Err(Error::invalid(format!(
                "train: lr {} / min_lr {} must satisfy 0 ≤ min_lr ≤ lr",
                self.lr, self.min_lr
            )));
        }
        if !(self.adam_epsilon > 0.0 && self.adam_epsilon.is_finite()) {
            return Err(Error::invalid(format!(
                "train: adam_epsilon {} must be a positive number",
                self.adam_epsilon
            )));
        }
        if self.micro_batches == 0 {
            return Err(Error::invalid("train: micro_batches must be ≥ 1"));
        }
        if !(0.0..=1.0).contains(&self.distill_alpha) {
            return Err(Error::invalid(format!(
                "train: distill_alpha {} not in [0, 1]",
                self.distill_alpha
            )));
        }
        Ok(())
    }
}

/// A model the training loop can drive.
pub trait Trainable: Module {
    /// Logits `[batch, seq, vocab]` and an auxiliary loss to add (scalar `[1]`), if any.
    fn train_forward(&self, tokens: &[Vec<u32>]) -> Result<(Tensor<3>, Option<Tensor<1>>)>;
}

impl Trainable for SsmMoe {
    fn train_forward(&self, tokens: &[Vec<u32>]) -> Result<(Tensor<3>, Option<Tensor<1>>)> {
        let out = self.forward(tokens)?;
        Ok((out.logits, Some(out.balance_loss)))
    }
}

impl Trainable for Llama {
    fn train_forward(&self, tokens: &[Vec<u32>]) -> Result<(Tensor<3>, Option<Tensor<1>>)> {
        Ok((self.forward(tokens)?, None))
    }
}

/// A teacher for distillation: logits `[batch, seq, vocab]` for a batch (no gradient). `Sync`:
/// micro-batches call it from their worker threads.
pub type Teacher<'a> = &'a (dyn Fn(&[Vec<u32>]) -> Result<Tensor<3>> + Sync);

/// A distillation teacher from an inference `model`: its logits, moved onto `device` (the
/// student's autodiff device) as constants.
pub fn teacher_from<M: Trainable + Sync>(
    model: &M,
    device: burn::tensor::Device,
) -> impl Fn(&[Vec<u32>]) -> Result<Tensor<3>> + Sync + '_ {
    move |tokens| {
        let (logits, _) = model.train_forward(tokens)?; // [batch, seq, vocab]
        Ok(Tensor::from_data(logits.into_data(), &device))
    }
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPoint {
    /// Steps done.
    pub step: usize,
    /// Training loss (the optimised total) at this step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Validation nats/token, when measured at this step.
    pub valid_nats: Option<f64>,
    /// Training tokens per second so far.
    pub tokens_per_s: f64,
}

/// Cross-entropy (nats/token) of `logits [batch, seq, vocab]` against `targets`.
pub fn cross_entropy(logits: Tensor<3>, targets: &[Vec<u32>]) -> Tensor<1> {
    let [b, t, _] = logits.dims();
    let device = logits.device();
    let flat: Vec<i64> = targets.iter().flatten().map(|&x| x as i64).collect();
    let idx = Tensor::<3, Int>::from_data(TensorData::new(flat, [b, t, 1]), &device); // [batch, seq, 1]
    log_softmax(logits, 2).gather(2, idx).mean().neg()
}

/// KL(teacher ‖ student) per token at temperature `tau`, scaled by `tau²`.
pub fn distill_kl(student: Tensor<3>, teacher: Tensor<3>, tau: f32) -> Tensor<1> {
    let [b, t, _] = student.dims();
    let pt = softmax(teacher.clone() / tau, 2); // [batch, seq, vocab]
    let lt = log_softmax(teacher / tau, 2); // [batch, seq, vocab]
    let ls = log_softmax(student / tau, 2); // [batch, seq, vocab]
    (pt * (lt - ls)).sum() / (b * t) as f32 * (tau * tau)
}

/// Draws a batch of `(inputs, targets)` windows from `stream`.
pub fn sample_batch(
    stream: &[u32],
    batch: usize,
    seq: usize,
    bos: u32,
    rng: &mut Rng,
) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let max_start = stream.len() - seq - 1;
    (0..batch)
        .map(|_| {
            let s = rng.below(max_start + 1);
            let mut w = stream[s..s + seq + 1].to_vec();
            w[0] = bos;
            (w[..seq].to_vec(), w[1..].to_vec())
        })
        .unzip()
}

/// Mean validation nats/token over up to `chunks` `llama-cpp`-style chunks (second halves scored).
pub fn validate<M: Trainable>(
    model: &M,
    valid: &[u32],
    seq: usize,
    bos: u32,
    chunks: usize,
) -> Result<f64> {
    let m = model.valid();
    let all = crate::eval::llama_cpp_chunks(valid, seq, bos)?;
    let step = (all.len() / chunks.max(1)).max(1);
    let picked: Vec<Vec<u32>> = all
        .iter()
        .step_by(step)
        .take(chunks.max(1))
        .cloned()
        .collect();
    let (mut total, mut count) = (0.0, 0usize);
    for group in picked.chunks(8) {
        let (logits, _) = m.train_forward(group)?;
        let [_, t, v] = logits.dims();
        let vals = crate::model::tensor_to_vec(logits)?;
        for (ci, c) in group.iter().enumerate() {
            for j in t / 2..t - 1 {
                let row = &vals[(ci * t + j) * v..(ci * t + j + 1) * v];
                total += crate::eval::nll(row, c[j + 1] as usize);
                count += 1;
            }
        }
    }
    Ok(total / count.max(1) as f64)
}

/// Trains `model` (built on an autodiff device) on `train` tokens; validates on `valid`.
/// `on_point` sees every logged point (for progress bars and reports).
pub fn train<M: Trainable>(
    mut model: M,
    train: &[u32],
    valid: &[u32],
    bos: u32,
    cfg: &TrainConfig,
    teacher: Option<Teacher>,
    mut on_point: impl FnMut(&TrainPoint),
) -> Result<(M, Vec<TrainPoint>)> {
    cfg.validate()?;
    if train.len() < cfg.seq_len + 2 {
        return Err(Error::invalid(format!(
            "training stream of {} tokens is shorter than one window of {}",
            train.len(),
            cfg.seq_len + 1
        )));
    }
    let mut optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay)
        .with_epsilon(cfg.adam_epsilon)
        .with_grad_clipping(
            (cfg.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(cfg.grad_clip)),
        )
        .init();
    let mut rng = Rng::new(cfg.seed ^ 0x5157_1500);
    let mut log = Vec::new();
    let t0 = std::time::Instant::now();
    for step in 0..cfg.steps {
        let (inputs, targets) = sample_batch(train, cfg.batch_size, cfg.seq_len, bos, &mut rng);
        let (loss_value, grads) = step::batch_gradients(&model, &inputs, &targets, teacher, cfg)?;
        if !loss_value.is_finite() {
            return Err(Error::invalid(format!(
                "training diverged: loss {loss_value} at step {step}"
            )));
        }
        let lr = cfg.lr_at(step);
        model = optim.step(lr, model, grads);
        let done = step + 1;
        let eval_now = done == cfg.steps || (cfg.eval_every > 0 && done % cfg.eval_every == 0);
        let valid_nats = if eval_now {
            Some(validate(&model, valid, cfg.seq_len, bos, cfg.eval_chunks)?)
        } else {
            None
        };
        let point = TrainPoint {
            step: done,
            loss: loss_value,
            lr,
            valid_nats,
            tokens_per_s: (done * cfg.batch_size * cfg.seq_len) as f64
                / t0.elapsed().as_secs_f64().max(1e-9),
        };
        on_point(&point);
        log.push(point);
    }
    Ok((model, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let c = TrainConfig {
            steps: 100,
            batch_size: 1,
            seq_len: 8,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 10,
            weight_decay: 0.1,
            grad_clip: 1.0,
            balance_coef: 0.01,
            distill_alpha: 0.0,
            distill_temperature: 1.0,
            eval_every: 0,
            eval_chunks: 4,
            seed: 0,
            adam_epsilon: DEFAULT_ADAM_EPSILON,
            micro_batches: DEFAULT_MICRO_BATCHES,
        };
        assert!((c.lr_at(0) - 1e-4).abs() < 1e-12);
        assert!((c.lr_at(9) - 1e-3).abs() < 1e-12);
        assert!((c.lr_at(10) - 1e-3).abs() < 1e-12);
        assert!((c.lr_at(99) - 1e-4).abs() < 2e-6);
        assert!(c.lr_at(50) < c.lr_at(20));
    }

    #[test]
    fn adam_epsilon_is_omitted_at_its_default_and_validated() {
        let json = r#"{"steps":1,"batch_size":1,"seq_len":8,"lr":0.001}"#;
        let mut c: TrainConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.adam_epsilon, DEFAULT_ADAM_EPSILON);
        // Configs written before the field existed keep their serialized form (and hashes).
        assert!(!serde_json::to_string(&c).unwrap().contains("adam_epsilon"));
        c.adam_epsilon = 1e-8;
        let back: TrainConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.adam_epsilon, 1e-8);
        c.adam_epsilon = 0.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("adam_epsilon")
        );
    }

    #[test]
    fn batches_are_seeded_and_start_with_bos() {
        let stream: Vec<u32> = (0..100).collect();
        let (a, ta) = sample_batch(&stream, 3, 8, 1, &mut Rng::new(9));
        let (b, _) = sample_batch(&stream, 3, 8, 1, &mut Rng::new(9));
        assert_eq!(a, b);
        assert!(a.iter().all(|w| w[0] == 1 && w.len() == 8));
        assert_eq!(a[0][1..], ta[0][..7]);
    }
}
