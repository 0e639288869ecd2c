//! SsmMoe tensor names, expert counting and deterministic initialisation, framework-free (the
//! burn model's loading and saving is in `ssm_moe_io`).

use crate::Result;
use crate::checkpoint::{WeightTensor, Weights};
use crate::config::SsmMoeConfig;
use crate::data::Rng;

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

/// Counts the experts stored for layer `i`.
pub fn experts_in_layer(w: &Weights, i: usize) -> usize {
    (0..)
        .take_while(|&e| w.contains(&expert_name(i, e, "w1")))
        .count()
}
