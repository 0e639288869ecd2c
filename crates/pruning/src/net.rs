//! A burn model of either family, built from a checkpoint's weights.

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use squish_core::checkpoint::Weights;
use squish_core::config::ModelConfig;
use squish_core::model::llama::Llama;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::train::{self, Teacher, TrainConfig, TrainPoint};
use squish_core::{Error, Result};

/// A model of either family.
#[derive(Debug)]
pub enum Net {
    /// SsmMoe family.
    SsmMoe(SsmMoe),
    /// Llama family.
    Llama(Llama),
}

impl Net {
    /// Builds the model on `device`.
    pub fn build(config: &ModelConfig, w: &Weights, device: &Device) -> Result<Self> {
        Ok(match config {
            ModelConfig::SsmMoe(c) => {
                Net::SsmMoe(SsmMoe::from_weights(c, w, device, ScanMode::Fused)?)
            }
            ModelConfig::Llama(c) => Net::Llama(Llama::from_weights(c, w, device)?),
        })
    }

    /// Logits `[batch, seq, vocab]`, handing `capture` every linear layer's input.
    pub fn forward_captured(
        &self,
        tokens: &[Vec<u32>],
        capture: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Result<Tensor<3>> {
        match self {
            Net::SsmMoe(m) => {
                m.check_tokens(tokens)?;
                Ok(m.forward_captured(tokens, capture)?.logits)
            }
            Net::Llama(m) => m.forward_captured(tokens, capture),
        }
    }

    /// Logits `[batch, seq, vocab]`.
    pub fn logits(&self, tokens: &[Vec<u32>]) -> Result<Tensor<3>> {
        self.forward_captured(tokens, &mut |_, _| {})
    }

    /// The weights.
    pub fn to_weights(&self) -> Result<Weights> {
        match self {
            Net::SsmMoe(m) => m.to_weights(),
            Net::Llama(m) => m.to_weights(),
        }
    }

    /// Validation nats/token over `chunks` llama-cpp chunks of `ctx`.
    pub fn valid_nats(&self, valid: &[u32], ctx: usize, bos: u32, chunks: usize) -> Result<f64> {
        match self {
            Net::SsmMoe(m) => train::validate(m, valid, ctx, bos, chunks),
            Net::Llama(m) => train::validate(m, valid, ctx, bos, chunks),
        }
    }

    /// Fine-tunes (this model must live on an autodiff device) with `teacher` distillation.
    pub fn train(
        self,
        data: (&[u32], &[u32], u32),
        cfg: &TrainConfig,
        teacher: Teacher,
        on_point: impl FnMut(&TrainPoint),
    ) -> Result<(Net, Vec<TrainPoint>)> {
        let (tr, va, bos) = data;
        Ok(match self {
            Net::SsmMoe(m) => {
                let (m, log) = train::train(m, tr, va, bos, cfg, Some(teacher), on_point)?;
                (Net::SsmMoe(m.valid()), log)
            }
            Net::Llama(m) => {
                let (m, log) = train::train(m, tr, va, bos, cfg, Some(teacher), on_point)?;
                (Net::Llama(m.valid()), log)
            }
        })
    }

    /// `Σ_batches |w · ∂L/∂w|` per weight element (first-order Taylor), by tensor name. The model
    /// must live on an autodiff device; `windows` are split into inputs/targets by one token.
    pub fn taylor(&self, windows: &[Vec<u32>]) -> Result<Vec<(String, Vec<f64>)>> {
        let mut acc: Vec<(String, Vec<f64>)> = Vec::new();
        for group in windows.chunks(8) {
            let inputs: Vec<Vec<u32>> = group.iter().map(|w| w[..w.len() - 1].to_vec()).collect();
            let targets: Vec<Vec<u32>> = group.iter().map(|w| w[1..].to_vec()).collect();
            let logits = self.logits(&inputs)?; // [batch, seq, vocab]
            let loss = train::cross_entropy(logits, &targets);
            let grads = loss.backward();
            let w = match self {
                Net::SsmMoe(m) => {
                    let g = GradientsParams::from_grads(grads, m);
                    m.clone().map(&mut WTimesGrad(g)).to_weights()?
                }
                Net::Llama(m) => {
                    let g = GradientsParams::from_grads(grads, m);
                    m.clone().map(&mut WTimesGrad(g)).to_weights()?
                }
            };
            if acc.is_empty() {
                acc = w
                    .iter()
                    .map(|(n, t)| (n.clone(), vec![0.0; t.numel()]))
                    .collect();
            }
            for ((name, a), (n2, t)) in acc.iter_mut().zip(w.iter()) {
                if name != n2 {
                    return Err(Error::tensor(name.clone(), "gradient names out of order"));
                }
                for (x, v) in a.iter_mut().zip(t.to_f32()) {
                    *x += v.abs() as f64;
                }
            }
        }
        Ok(acc)
    }
}

/// Replaces every parameter by `w ⊙ grad` (zero where no gradient reached it).
struct WTimesGrad(GradientsParams);

impl ModuleMapper for WTimesGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let w = param.val().inner(); // same shape as the parameter
        let v = match self.0.get::<D>(param.id) {
            Some(g) => w * g.inner(),
            None => w.zeros_like(),
        };
        Param::from_tensor(v)
    }
}
