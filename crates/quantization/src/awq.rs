//! AWQ-style per-input-channel scaling (Lin et al. 2023), applied only where it folds exactly.
//!
//! For linears `W_k` sharing an input `X` produced by a foldable op `P`, search `α` on a grid,
//! `s = mean|x|^α` (normalised by `√(max·min)`), and keep the `α` minimising the summed layer-output
//! error `Σ_k ‖X(W_k − Q(W_k·diag s)·diag(1/s))ᵀ‖²` (computed exactly from `XᵀX`). Then
//! `W_k ← W_k·diag(s)` and `P ← P / s`, which leaves the FP32 function unchanged:
//!
//! | inputs of                        | folded into                          |
//! |----------------------------------|--------------------------------------|
//! | `wq, wk, wv` / `w1, w3` (Llama)  | `attention_norm` / `ffn_norm` gains  |
//! | `wo`                             | rows of `wv` (`s` tied across the query heads of a kv head) |
//! | `w2`                             | rows of `w3` (`silu(w1x) ⊙ (w3x)` is linear in `w3`) |
//! | `output` (untied classifier)     | `norm` gain                          |
//! | SsmMoe `in_proj`; router+experts `w1, w3` | `ssm_norm` / `moe_norm` gains |
//! | SsmMoe `dt_proj`; expert `w2`    | rows `0..dt_rank` of `x_proj`; rows of the expert's `w3` |
//!
//! Not folded (no exact fold exists, AWQ skipped): the tied classifier `tok_embeddings` (the same
//! matrix is the input embedding), SsmMoe `x_proj` (after conv + SiLU) and `out_proj` (after the
//! scan and the SiLU gate).

use serde::{Deserialize, Serialize};
use squish_core::checkpoint::{Checkpoint, TensorData, WeightTensor};
use squish_core::config::ModelConfig;
use squish_core::{Error, Result};

use crate::calibration::{Calibration, TensorStats};
use crate::spec::{Method, QuantFormat};

/// AWQ search parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwqConfig {
    /// Number of α values tried in `[0, 1)`.
    #[serde(default = "default_grid")]
    pub grid: usize,
}

fn default_grid() -> usize {
    20
}

impl Default for AwqConfig {
    fn default() -> Self {
        AwqConfig {
            grid: default_grid(),
        }
    }
}

/// Where the inverse scale goes.
#[derive(Debug, Clone)]
enum Fold {
    /// Divide a 1-D gain by `s`.
    Gain(String),
    /// Divide rows `offset + slot` of a 2-D weight by `s_slot`.
    Rows(String, usize),
}

/// One group of linears sharing an input.
#[derive(Debug, Clone)]
struct Site {
    linears: Vec<String>,
    fold: Fold,
    /// Input column → scale slot (tied scales); identity for gains.
    tie: Vec<usize>,
}

/// The outcome for one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwqSite {
    /// The linears scaled together.
    pub linears: Vec<String>,
    /// What absorbed `1/s`.
    pub folded_into: String,
    /// Chosen α (0 = no scaling helped).
    pub alpha: f32,
    /// Summed layer-output error (squared, calibration inputs) before and after.
    pub error_before: f64,
    /// See `error_before`.
    pub error_after: f64,
}

fn ident(n: usize) -> Vec<usize> {
    (0..n).collect()
}

fn sites(ckpt: &Checkpoint) -> Vec<Site> {
    let mut out = Vec::new();
    match &ckpt.config {
        ModelConfig::Llama(c) => {
            let hs = c.head_size();
            let rep = c.n_heads / c.n_kv_heads;
            for i in 0..c.n_layers {
                let p = |s: &str| format!("layers.{i}.{s}");
                out.push(Site {
                    linears: vec![
                        p("attention.wq.weight"),
                        p("attention.wk.weight"),
                        p("attention.wv.weight"),
                    ],
                    fold: Fold::Gain(p("attention_norm.weight")),
                    tie: ident(c.dim),
                });
                let tie = (0..c.n_heads * hs)
                    .map(|col| (col / hs / rep) * hs + col % hs)
                    .collect();
                out.push(Site {
                    linears: vec![p("attention.wo.weight")],
                    fold: Fold::Rows(p("attention.wv.weight"), 0),
                    tie,
                });
                out.push(Site {
                    linears: vec![p("feed_forward.w1.weight"), p("feed_forward.w3.weight")],
                    fold: Fold::Gain(p("ffn_norm.weight")),
                    tie: ident(c.dim),
                });
                let hidden = ckpt
                    .weights
                    .get(&p("feed_forward.w2.weight"))
                    .map_or(0, |t| t.shape[1]);
                out.push(Site {
                    linears: vec![p("feed_forward.w2.weight")],
                    fold: Fold::Rows(p("feed_forward.w3.weight"), 0),
                    tie: ident(hidden),
                });
            }
            if !c.shared_classifier {
                out.push(Site {
                    linears: vec!["output.weight".into()],
                    fold: Fold::Gain("norm.weight".into()),
                    tie: ident(c.dim),
                });
            }
        }
        ModelConfig::SsmMoe(c) => {
            for i in 0..c.n_layers {
                let p = |s: &str| format!("layers.{i}.{s}");
                out.push(Site {
                    linears: vec![p("ssm.in_proj.weight")],
                    fold: Fold::Gain(p("ssm_norm.weight")),
                    tie: ident(c.d_model),
                });
                out.push(Site {
                    linears: vec![p("ssm.dt_proj.weight")],
                    fold: Fold::Rows(p("ssm.x_proj.weight"), 0),
                    tie: ident(c.dt_rank),
                });
                let mut moe = vec![p("moe.router.weight")];
                for e in 0..c.n_experts {
                    moe.push(p(&format!("moe.experts.{e}.w1.weight")));
                    moe.push(p(&format!("moe.experts.{e}.w3.weight")));
                    let h = ckpt
                        .weights
                        .get(&p(&format!("moe.experts.{e}.w2.weight")))
                        .map_or(0, |t| t.shape[1]);
                    out.push(Site {
                        linears: vec![p(&format!("moe.experts.{e}.w2.weight"))],
                        fold: Fold::Rows(p(&format!("moe.experts.{e}.w3.weight")), 0),
                        tie: ident(h),
                    });
                }
                out.push(Site {
                    linears: moe,
                    fold: Fold::Gain(p("moe_norm.weight")),
                    tie: ident(c.d_model),
                });
            }
        }
    }
    out
}

fn f32_of(ckpt: &Checkpoint, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = ckpt.weights.get(name)?;
    if matches!(t.data, TensorData::Quant(_)) {
        return Err(Error::tensor(name, "AWQ needs unquantized weights"));
    }
    Ok((t.shape.clone(), t.to_f32()))
}

/// Squared output error of quantizing `w·diag(s)` with RTN/`method` and unscaling.
fn scaled_error(
    w: &[f32],
    rows: usize,
    cols: usize,
    s: &[f32],
    fmt: &QuantFormat,
    method: &Method,
    stats: &TensorStats,
) -> Result<f64> {
    let ws: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(k, &x)| x * s[k % cols])
        .collect(); // [rows, cols]
    let q = method
        .quantizer()
        .quantize(&ws, rows, cols, fmt, None)?
        .dequantize(); // [rows, cols]
    let back: Vec<f32> = q
        .iter()
        .enumerate()
        .map(|(k, &x)| x / s[k % cols])
        .collect();
    let d: Vec<f32> = w.iter().zip(&back).map(|(a, b)| a - b).collect();
    Ok(stats.output_inner(&d, &d, rows))
}

/// Applies AWQ scaling in place on `ckpt`'s F32 weights and rescales `calib`'s statistics of the
/// scaled linears to match. The search quantizes with RTN (`Method::Rtn`) in `fmt` (the MSE
/// search would be too slow inside a grid search). Sites whose tensors are missing are skipped.
pub fn apply_awq(
    ckpt: &mut Checkpoint,
    calib: &mut Calibration,
    fmt: &QuantFormat,
    cfg: &AwqConfig,
) -> Result<Vec<AwqSite>> {
    let mut report = Vec::new();
    for site in sites(ckpt) {
        let Some(stats0) = calib.get(&site.linears[0]).cloned() else {
            continue;
        };
        if site
            .linears
            .iter()
            .any(|n| !ckpt.weights.contains(n) || calib.get(n).is_none())
        {
            continue;
        }
        let cols = stats0.cols;
        let n_slots = site.tie.iter().max().map_or(0, |m| m + 1);
        // mean|x| per slot (averaged over tied columns).
        let xm = stats0.abs_mean();
        let mut slot_sum = vec![0.0f64; n_slots];
        let mut slot_n = vec![0usize; n_slots];
        for (c, &sl) in site.tie.iter().enumerate() {
            slot_sum[sl] += xm[c];
            slot_n[sl] += 1;
        }
        let slot_mean: Vec<f64> = slot_sum
            .iter()
            .zip(&slot_n)
            .map(|(s, &n)| (s / n.max(1) as f64).max(1e-8))
            .collect();
        let ws: Vec<(usize, Vec<f32>)> = site
            .linears
            .iter()
            .map(|n| f32_of(ckpt, n).map(|(sh, v)| (sh[0], v)))
            .collect::<Result<_>>()?;
        let mut best: Option<(f64, f32, Vec<f32>)> = None;
        let mut before = 0.0;
        for gi in 0..cfg.grid.max(1) {
            let alpha = gi as f32 / cfg.grid.max(1) as f32;
            let mut s_slot: Vec<f64> = slot_mean.iter().map(|m| m.powf(alpha as f64)).collect();
            let (mx, mn) = s_slot
                .iter()
                .fold((0.0f64, f64::MAX), |(a, b), &x| (a.max(x), b.min(x)));
            let norm = (mx * mn).sqrt().max(1e-12);
            s_slot.iter_mut().for_each(|x| *x /= norm);
            let s: Vec<f32> = site.tie.iter().map(|&sl| s_slot[sl] as f32).collect(); // [cols]
            let mut err = 0.0;
            for (name, (rows, w)) in site.linears.iter().zip(&ws) {
                err += scaled_error(
                    w,
                    *rows,
                    cols,
                    &s,
                    fmt,
                    &Method::Rtn,
                    calib.get(name).expect("checked"),
                )?;
            }
            if gi == 0 {
                before = err;
            }
            if best.as_ref().is_none_or(|(b, _, _)| err < *b) {
                best = Some((err, alpha, s_slot.iter().map(|&x| x as f32).collect()));
            }
        }
        let (after, alpha, s_slot) = best.expect("grid non-empty");
        let s: Vec<f32> = site.tie.iter().map(|&sl| s_slot[sl]).collect(); // [cols]
        if alpha > 0.0 {
            for (name, (rows, w)) in site.linears.iter().zip(ws) {
                let scaled: Vec<f32> = w
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| x * s[k % cols])
                    .collect();
                ckpt.weights
                    .insert(name.clone(), WeightTensor::f32(vec![rows, cols], scaled)?);
                let st = calib.tensors.get_mut(name).expect("checked");
                for i in 0..cols {
                    st.abs_sum[i] /= s[i] as f64;
                    for j in 0..cols {
                        st.xtx[i * cols + j] /= s[i] as f64 * s[j] as f64;
                    }
                }
            }
            let target = match &site.fold {
                Fold::Gain(g) => g.clone(),
                Fold::Rows(r, _) => r.clone(),
            };
            let (shape, mut v) = f32_of(ckpt, &target)?;
            match &site.fold {
                Fold::Gain(_) => v.iter_mut().zip(&s_slot).for_each(|(x, s)| *x /= s),
                Fold::Rows(_, off) => {
                    let c = shape[1];
                    for (sl, s) in s_slot.iter().enumerate() {
                        v[(off + sl) * c..(off + sl + 1) * c]
                            .iter_mut()
                            .for_each(|x| *x /= s);
                    }
                }
            }
            ckpt.weights.insert(target, WeightTensor::f32(shape, v)?);
        }
        let folded_into = match &site.fold {
            Fold::Gain(g) | Fold::Rows(g, _) => g.clone(),
        };
        report.push(AwqSite {
            linears: site.linears,
            folded_into,
            alpha,
            error_before: before,
            error_after: after,
        });
    }
    Ok(report)
}
