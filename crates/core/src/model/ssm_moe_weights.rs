//! SsmMoe ↔ [`Weights`]: tensor names, deterministic initialisation, loading and saving.

use burn::tensor::Device;

use super::ops::{param1, param2, put_param};
use super::ssm_moe::{Expert, Moe, ScanMode, Ssm, SsmMoe, SsmMoeBlock};
use crate::checkpoint::{WeightTensor, Weights};
use crate::config::SsmMoeConfig;
use crate::data::Rng;
use crate::{Error, Result};

/// Name of an SSM tensor of layer `i` (`part` like `in_proj.weight`, `A_log`).
pub fn ssm_name(i: usize, part: &str) -> String {
    format!("layers.{i}.ssm.{part}")
}

/// Name of expert `e`'s matrix `w` (`w1`/`w2`/`w3`) in layer `i`.
pub fn expert_name(i: usize, e: usize, w: &str) -> String {
    format!("layers.{i}.moe.experts.{e}.{w}.weight")
}

/// Name of layer `i`'s router.
pub fn router_name(i: usize) -> String {
    format!("layers.{i}.moe.router.weight")
}

fn normal(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1 = rng.f32().max(1e-7);
            let u2 = rng.f32();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect()
}

fn uniform(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| lo + (hi - lo) * rng.f32()).collect()
}

/// Deterministic initial weights for `c` from `seed` (Mamba's Δ/A initialisation, GPT-2-style
/// scaled residual projections).
pub fn init_weights(c: &SsmMoeConfig, seed: u64) -> Result<Weights> {
    c.validate()?;
    let mut rng = Rng::new(seed);
    let (d, di, n, r, k, h) = (
        c.d_model,
        c.d_inner,
        c.d_state,
        c.dt_rank,
        c.d_conv,
        c.expert_hidden,
    );
    let std = 0.02;
    let resid_std = std / (2.0 * c.n_layers as f32).sqrt();
    let mut w = Weights::new();
    let mut put = |name: String, shape: Vec<usize>, v: Vec<f32>| -> Result<()> {
        w.insert(name, WeightTensor::f32(shape, v)?);
        Ok(())
    };
    put(
        "tok_embeddings.weight".into(),
        vec![c.vocab_size, d],
        normal(&mut rng, c.vocab_size * d, std),
    )?;
    for i in 0..c.n_layers {
        put(format!("layers.{i}.ssm_norm.weight"), vec![d], vec![1.0; d])?;
        put(
            ssm_name(i, "in_proj.weight"),
            vec![2 * di, d],
            normal(&mut rng, 2 * di * d, std),
        )?;
        let cb = 1.0 / (k as f32).sqrt();
        put(
            ssm_name(i, "conv.weight"),
            vec![di, k],
            uniform(&mut rng, di * k, -cb, cb),
        )?;
        put(ssm_name(i, "conv.bias"), vec![di], vec![0.0; di])?;
        put(
            ssm_name(i, "x_proj.weight"),
            vec![r + 2 * n, di],
            normal(&mut rng, (r + 2 * n) * di, std),
        )?;
        let dtb = 1.0 / (r as f32).sqrt();
        put(
            ssm_name(i, "dt_proj.weight"),
            vec![di, r],
            uniform(&mut rng, di * r, -dtb, dtb),
        )?;
        // Δ starts log-uniform in [1e-3, 1e-1]; the bias is softplus⁻¹(Δ).
        let bias: Vec<f32> = (0..di)
            .map(|_| {
                let dt = (rng.f32() * (0.1f32.ln() - 0.001f32.ln()) + 0.001f32.ln())
                    .exp()
                    .max(1e-4);
                dt + (-(-dt).exp_m1()).ln()
            })
            .collect();
        put(ssm_name(i, "dt_proj.bias"), vec![di], bias)?;
        put(
            ssm_name(i, "A_log"),
            vec![di, n],
            (0..di * n).map(|j| ((j % n) as f32 + 1.0).ln()).collect(),
        )?;
        put(ssm_name(i, "D"), vec![di], vec![1.0; di])?;
        put(
            ssm_name(i, "out_proj.weight"),
            vec![d, di],
            normal(&mut rng, d * di, resid_std),
        )?;
        put(format!("layers.{i}.moe_norm.weight"), vec![d], vec![1.0; d])?;
        put(
            router_name(i),
            vec![c.n_experts, d],
            normal(&mut rng, c.n_experts * d, std),
        )?;
        for e in 0..c.n_experts {
            put(
                expert_name(i, e, "w1"),
                vec![h, d],
                normal(&mut rng, h * d, std),
            )?;
            put(
                expert_name(i, e, "w2"),
                vec![d, h],
                normal(&mut rng, d * h, resid_std),
            )?;
            put(
                expert_name(i, e, "w3"),
                vec![h, d],
                normal(&mut rng, h * d, std),
            )?;
        }
    }
    put("norm.weight".into(), vec![d], vec![1.0; d])?;
    Ok(w)
}

fn dim0(w: &Weights, name: &str) -> Result<usize> {
    w.get(name)?
        .shape
        .first()
        .copied()
        .ok_or_else(|| Error::tensor(name, "empty shape"))
}

/// Counts the experts stored for layer `i`.
pub fn experts_in_layer(w: &Weights, i: usize) -> usize {
    (0..)
        .take_while(|&e| w.contains(&expert_name(i, e, "w1")))
        .count()
}

impl SsmMoe {
    /// Builds the model from weights; per-layer `d_inner`, expert count and expert widths are read
    /// from the tensor shapes.
    pub fn from_weights(
        c: &SsmMoeConfig,
        w: &Weights,
        device: &Device,
        scan: ScanMode,
    ) -> Result<Self> {
        c.validate()?;
        let (d, n, r, k) = (c.d_model, c.d_state, c.dt_rank, c.d_conv);
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let di = dim0(w, &ssm_name(i, "D"))?;
            let ssm = Ssm {
                in_proj: param2(w, &ssm_name(i, "in_proj.weight"), 2 * di, d, device)?,
                conv_weight: param2(w, &ssm_name(i, "conv.weight"), di, k, device)?,
                conv_bias: param1(w, &ssm_name(i, "conv.bias"), di, device)?,
                x_proj: param2(w, &ssm_name(i, "x_proj.weight"), r + 2 * n, di, device)?,
                dt_proj: param2(w, &ssm_name(i, "dt_proj.weight"), di, r, device)?,
                dt_bias: param1(w, &ssm_name(i, "dt_proj.bias"), di, device)?,
                a_log: param2(w, &ssm_name(i, "A_log"), di, n, device)?,
                d: param1(w, &ssm_name(i, "D"), di, device)?,
                out_proj: param2(w, &ssm_name(i, "out_proj.weight"), d, di, device)?,
            };
            let n_exp = experts_in_layer(w, i);
            if n_exp == 0 {
                return Err(Error::tensor(
                    expert_name(i, 0, "w1"),
                    "layer has no experts",
                ));
            }
            let mut experts = Vec::with_capacity(n_exp);
            for e in 0..n_exp {
                let h = dim0(w, &expert_name(i, e, "w1"))?;
                experts.push(Expert {
                    w1: param2(w, &expert_name(i, e, "w1"), h, d, device)?,
                    w2: param2(w, &expert_name(i, e, "w2"), d, h, device)?,
                    w3: param2(w, &expert_name(i, e, "w3"), h, d, device)?,
                });
            }
            let moe = Moe {
                router: param2(w, &router_name(i), n_exp, d, device)?,
                experts,
            };
            layers.push(SsmMoeBlock {
                ssm_norm: param1(w, &format!("layers.{i}.ssm_norm.weight"), d, device)?,
                ssm,
                moe_norm: param1(w, &format!("layers.{i}.moe_norm.weight"), d, device)?,
                moe,
            });
        }
        Ok(SsmMoe {
            tok_embeddings: param2(w, "tok_embeddings.weight", c.vocab_size, d, device)?,
            layers,
            norm: param1(w, "norm.weight", d, device)?,
            config: c.clone(),
            scan,
        })
    }

    /// The model's parameters as F32 [`Weights`] with checkpoint names.
    pub fn to_weights(&self) -> Result<Weights> {
        let mut w = Weights::new();
        put_param(&mut w, "tok_embeddings.weight", &self.tok_embeddings)?;
        for (i, l) in self.layers.iter().enumerate() {
            let s = &l.ssm;
            put_param(&mut w, format!("layers.{i}.ssm_norm.weight"), &l.ssm_norm)?;
            put_param(&mut w, ssm_name(i, "in_proj.weight"), &s.in_proj)?;
            put_param(&mut w, ssm_name(i, "conv.weight"), &s.conv_weight)?;
            put_param(&mut w, ssm_name(i, "conv.bias"), &s.conv_bias)?;
            put_param(&mut w, ssm_name(i, "x_proj.weight"), &s.x_proj)?;
            put_param(&mut w, ssm_name(i, "dt_proj.weight"), &s.dt_proj)?;
            put_param(&mut w, ssm_name(i, "dt_proj.bias"), &s.dt_bias)?;
            put_param(&mut w, ssm_name(i, "A_log"), &s.a_log)?;
            put_param(&mut w, ssm_name(i, "D"), &s.d)?;
            put_param(&mut w, ssm_name(i, "out_proj.weight"), &s.out_proj)?;
            put_param(&mut w, format!("layers.{i}.moe_norm.weight"), &l.moe_norm)?;
            put_param(&mut w, router_name(i), &l.moe.router)?;
            for (e, ex) in l.moe.experts.iter().enumerate() {
                put_param(&mut w, expert_name(i, e, "w1"), &ex.w1)?;
                put_param(&mut w, expert_name(i, e, "w2"), &ex.w2)?;
                put_param(&mut w, expert_name(i, e, "w3"), &ex.w3)?;
            }
        }
        put_param(&mut w, "norm.weight", &self.norm)?;
        Ok(w)
    }
}
