//! SsmMoe ↔ [`Weights`] in burn: [`SsmMoe::from_weights`] and [`SsmMoe::to_weights`].

use burn::tensor::Device;

use super::ops::{param1, param2, put_param};
use super::ssm_moe::{Expert, Moe, ScanMode, Ssm, SsmMoe, SsmMoeBlock};
use super::ssm_moe_weights::{expert_name, experts_in_layer, router_name, ssm_name};
use super::structure::residual_width;
use crate::checkpoint::Weights;
use crate::config::SsmMoeConfig;
use crate::{Error, Result};

fn dim0(w: &Weights, name: &str) -> Result<usize> {
    w.get(name)?
        .shape
        .first()
        .copied()
        .ok_or_else(|| Error::tensor(name, "empty shape"))
}

impl SsmMoe {
    /// Builds the model from weights; the residual width (`d_model`), per-layer `d_inner`, expert
    /// count and expert widths are read from the tensor shapes.
    pub fn from_weights(
        c: &SsmMoeConfig,
        w: &Weights,
        device: &Device,
        scan: ScanMode,
    ) -> Result<Self> {
        c.validate()?;
        let d = residual_width(w, c.vocab_size)?;
        let (n, r, k) = (c.d_state, c.dt_rank, c.d_conv);
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
            moe: Default::default(),
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
