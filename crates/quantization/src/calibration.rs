//! Calibration: per-linear input statistics gathered from the FP32 model's `forward_captured`.
//!
//! For every linear weight `W [out, in]` we keep `XᵀX [in, in]` (f64) and `Σ|x| [in]` over all
//! calibration tokens. From these come the per-column second moments (MSE weighting), GPTQ's
//! Hessian `H = 2·XᵀX / n`, AWQ's mean `|x|`, and the exact layer-output error
//! `‖X(W−Q)ᵀ‖²_F = tr((W−Q) XᵀX (W−Q)ᵀ)` without storing any activations.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use squish_core::checkpoint::{Checkpoint, TensorData};
use squish_core::config::ModelConfig;
use squish_core::model::llama::Llama;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::tensor_to_vec;
use squish_core::tokenizer::Tokenizer;
use squish_core::{Error, Result};

/// Input statistics of one linear weight.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorStats {
    /// Input width (`W`'s columns).
    pub cols: usize,
    /// Number of input rows (tokens) accumulated.
    pub n: u64,
    /// `XᵀX`, row-major `[cols, cols]`.
    pub xtx: Vec<f64>,
    /// `Σ |x_c|` per column `[cols]`.
    pub abs_sum: Vec<f64>,
}

impl TensorStats {
    /// Empty statistics for inputs of width `cols`.
    pub fn new(cols: usize) -> Self {
        TensorStats {
            cols,
            n: 0,
            xtx: vec![0.0; cols * cols],
            abs_sum: vec![0.0; cols],
        }
    }

    /// Statistics of explicit inputs `x [n, cols]` (row-major).
    pub fn from_inputs(x: &[f32], cols: usize) -> Self {
        let mut s = TensorStats::new(cols);
        for row in x.chunks_exact(cols) {
            for i in 0..cols {
                s.abs_sum[i] += row[i].abs() as f64;
                for j in 0..cols {
                    s.xtx[i * cols + j] += row[i] as f64 * row[j] as f64;
                }
            }
            s.n += 1;
        }
        s
    }

    /// Adds another batch's statistics.
    pub fn add(&mut self, other: &TensorStats) {
        self.n += other.n;
        self.xtx
            .iter_mut()
            .zip(&other.xtx)
            .for_each(|(a, b)| *a += b);
        self.abs_sum
            .iter_mut()
            .zip(&other.abs_sum)
            .for_each(|(a, b)| *a += b);
    }

    /// `E[x_c²]` per column `[cols]`.
    pub fn col_sq_mean(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        (0..self.cols)
            .map(|i| self.xtx[i * self.cols + i] / n)
            .collect()
    }

    /// `E[|x_c|]` per column `[cols]`.
    pub fn abs_mean(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        self.abs_sum.iter().map(|a| a / n).collect()
    }

    /// GPTQ's Hessian `2·XᵀX / n`, `[cols, cols]`.
    pub fn hessian(&self) -> Vec<f64> {
        let n = self.n.max(1) as f64;
        self.xtx.iter().map(|v| 2.0 * v / n).collect()
    }

    /// `tr(A XᵀX Bᵀ)` for `A, B [rows, cols]`: the inner product of the layer outputs `XAᵀ`, `XBᵀ`.
    pub fn output_inner(&self, a: &[f32], b: &[f32], rows: usize) -> f64 {
        let c = self.cols;
        let mut total = 0.0;
        let mut tmp = vec![0.0f64; c];
        for r in 0..rows {
            let (ar, br) = (&a[r * c..(r + 1) * c], &b[r * c..(r + 1) * c]);
            // tmp = XᵀX · b_r
            for (i, t) in tmp.iter_mut().enumerate() {
                *t = self.xtx[i * c..(i + 1) * c]
                    .iter()
                    .zip(br)
                    .map(|(h, &x)| h * x as f64)
                    .sum();
            }
            total += ar.iter().zip(&tmp).map(|(&x, t)| x as f64 * t).sum::<f64>();
        }
        total
    }

    /// Relative error of the layer output on the calibration inputs: `‖X(W−Q)ᵀ‖ / ‖XWᵀ‖`.
    pub fn relative_output_error(&self, w: &[f32], q: &[f32], rows: usize) -> f64 {
        let d: Vec<f32> = w.iter().zip(q).map(|(a, b)| a - b).collect();
        let num = self.output_inner(&d, &d, rows).max(0.0);
        let den = self.output_inner(w, w, rows);
        if den > 0.0 { (num / den).sqrt() } else { 0.0 }
    }
}

/// Statistics for every linear weight of a model, keyed by weight name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Calibration {
    /// Weight name → input statistics.
    pub tensors: BTreeMap<String, TensorStats>,
    /// Windows run through the model.
    pub windows: usize,
    /// Tokens run through the model.
    pub tokens: usize,
}

/// Tokenizes `stories` (each with BOS), concatenates them and cuts the stream into windows of
/// `window` tokens whose first token is BOS (as the `llama-cpp` evaluation protocol does). A
/// final partial window is kept when it has at least 16 tokens.
pub fn calibration_windows(
    tokenizer: &dyn Tokenizer,
    stories: &[String],
    window: usize,
) -> Vec<Vec<u32>> {
    let stream = squish_core::data::story_tokens(tokenizer, stories);
    let bos = tokenizer.bos_id();
    stream
        .chunks(window.max(2))
        .filter(|c| c.len() >= 16.min(window))
        .map(|c| {
            let mut c = c.to_vec();
            c[0] = bos;
            c
        })
        .collect()
}

/// The statistics of one captured input `x [tokens, cols]` (row-major values): `XᵀX` summed in
/// f32 over blocks of 256 rows (vectorizable full-row updates), then accumulated in f64.
fn stats_of(x: &[f32], cols: usize) -> TensorStats {
    let mut s = TensorStats::new(cols);
    let mut acc = vec![0.0f32; cols * cols]; // [cols, cols]
    for block in x.chunks(256 * cols) {
        acc.fill(0.0);
        for row in block.chunks_exact(cols) {
            for (i, &xi) in row.iter().enumerate() {
                s.abs_sum[i] += xi.abs() as f64;
                acc[i * cols..(i + 1) * cols]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(a, &xj)| *a += xi * xj);
            }
            s.n += 1;
        }
        s.xtx
            .iter_mut()
            .zip(&acc)
            .for_each(|(d, &a)| *d += a as f64);
    }
    s
}

impl Calibration {
    /// Runs `windows` through the F32 model of `ckpt` (batches of 8 equal-length windows) and
    /// accumulates every linear layer's input statistics. Quantized checkpoints are refused.
    pub fn collect(ckpt: &Checkpoint, windows: &[Vec<u32>], device: &Device) -> Result<Self> {
        if let Some((name, _)) = ckpt
            .weights
            .iter()
            .find(|(_, t)| matches!(t.data, TensorData::Quant(_)))
        {
            return Err(Error::tensor(
                name,
                "calibration needs the unquantized model, but this tensor is already quantized",
            ));
        }
        if windows.is_empty() {
            return Err(Error::invalid(
                "calibration needs at least one token window",
            ));
        }
        let model = match &ckpt.config {
            ModelConfig::Llama(c) => Family::Llama(Llama::from_weights(c, &ckpt.weights, device)?),
            ModelConfig::SsmMoe(c) => Family::SsmMoe(SsmMoe::from_weights(
                c,
                &ckpt.weights,
                device,
                ScanMode::Chunked(16),
            )?),
        };
        let mut cal = Calibration::default();
        let mut err: Option<Error> = None;
        // Group windows of equal length (all but possibly the last have the same length).
        let mut batches: Vec<Vec<Vec<u32>>> = Vec::new();
        for w in windows {
            match batches.last_mut() {
                Some(b) if b.len() < 8 && b[0].len() == w.len() => b.push(w.clone()),
                _ => batches.push(vec![w.clone()]),
            }
        }
        for batch in &batches {
            // Weights sharing an input (wq/wk/wv, w1/w3, expert w1/w3) see the same tensor:
            // detect it by comparing values with the previous capture and reuse its statistics.
            let mut last: Option<(Vec<f32>, TensorStats)> = None;
            let mut capture = |name: &str, x: &Tensor<3>| {
                if err.is_some() {
                    return;
                }
                let res = (|| -> Result<()> {
                    let vals = tensor_to_vec(x.clone())?; // [batch·seq·in]
                    let stats = match &last {
                        Some((v, s)) if *v == vals => s.clone(),
                        _ => {
                            let s = stats_of(&vals, x.dims()[2]);
                            last = Some((vals, s.clone()));
                            s
                        }
                    };
                    match cal.tensors.get_mut(name) {
                        Some(acc) => acc.add(&stats),
                        None => {
                            cal.tensors.insert(name.to_string(), stats);
                        }
                    }
                    Ok(())
                })();
                if let Err(e) = res {
                    err = Some(e);
                }
            };
            match &model {
                Family::Llama(m) => drop(m.forward_captured(batch, &mut capture)?),
                Family::SsmMoe(m) => drop(m.forward_captured(batch, &mut capture)?),
            }
            cal.windows += batch.len();
            cal.tokens += batch.iter().map(Vec::len).sum::<usize>();
        }
        match err {
            Some(e) => Err(e),
            None => Ok(cal),
        }
    }

    /// The statistics of weight `name`, if captured.
    pub fn get(&self, name: &str) -> Option<&TensorStats> {
        self.tensors.get(name)
    }
}

enum Family {
    Llama(Llama),
    SsmMoe(SsmMoe),
}
