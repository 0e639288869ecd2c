//! Quantization-aware training: fine-tune the latent F32 weights through their storage grid
//! (fake-quant with a straight-through estimator, [`crate::qat_net`]) with distillation from the
//! F32 model (`squish_core::train::train` with a teacher: KL to its logits + CE), then export the
//! packed checkpoint with exactly the grid the forward used.
//!
//! Scales are recomputed from the latent weights at every step ([`QatScales`]): min-max, or the
//! per-group clipping search of [`crate::mse`] (weighted by calibration `E[x²]` when given). The
//! same function ([`qat_quantize`]) produces the training forward's weights and the exported
//! codes, so the exported model equals the trained fake-quant model up to float rounding.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor};
use half::f16;
use serde::{Deserialize, Serialize};
use squish_core::checkpoint::{Checkpoint, TensorData, Weights};
use squish_core::config::ModelConfig;
use squish_core::model::llama::Llama;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::{CpuBackend, tensor_to_vec};
use squish_core::quant::QTensor;
use squish_core::train::{TrainConfig, TrainPoint, Trainable, train};
use squish_core::{Error, Result};

use crate::calibration::Calibration;
use crate::codebook::{CodebookSpec, quantize_codebook};
use crate::grid::{GroupParams, group_ranges, level, pack, params_for, sym_div};
use crate::mse::{MseConfig, best_params};
use crate::pipeline::{QuantConfig, SmallFormat};
use crate::qat_export::export;
use crate::qat_flips::FlipSummary;
use crate::qat_net::{QatNet, QatPlan, TensorTarget};
use crate::qat_plan::f32_plan;
pub use crate::qat_plan::{CodebookTarget, build_plan};
use crate::report::QuantReport;
use crate::spec::{Method, QuantFormat, QuantSpec};

/// Where the latent weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QatInit {
    /// The F32 weights.
    F32,
    /// The RTN-dequantized weights.
    Rtn,
    /// The MSE-clipping-dequantized weights (default).
    #[default]
    Mse,
    /// The GPTQ-dequantized weights (needs calibration).
    Gptq,
}

/// How the scales of the quantized tensors are chosen from the latent weights at every step
/// (and at export).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum QatScales {
    /// Min-max range (RTN grid).
    MinMax,
    /// Per-group clipping search (weighted by calibration `E[x²]` when available).
    Mse(MseConfig),
    /// Learned step size (LSQ, Esser et al. 2020): the scales start from the clipping search of
    /// the initial latents, then are trained with the weights (log-parameterised, F16-rounded in
    /// the forward by a straight-through estimator). Symmetric formats only.
    Learned(MseConfig),
}

impl Default for QatScales {
    fn default() -> Self {
        QatScales::Mse(MseConfig {
            steps: 21,
            ..MseConfig::default()
        })
    }
}

/// QAT settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QatConfig {
    /// Default format and tensor selection (`format`, `quantize_embedding`, `keep`, `small`);
    /// `method` is not used (the grid is [`QatConfig::scales`]); `awq` must be `None`.
    pub quant: QuantConfig,
    /// Per-tensor overrides: `Some(format)` = quantize to it, `None` = keep (F32/F16 per
    /// `quant.small`). Names must exist in the checkpoint.
    #[serde(default)]
    pub per_tensor: BTreeMap<String, Option<QuantFormat>>,
    /// Per-tensor codebook overrides: the tensor becomes a trained codebook
    /// ([`crate::qat_codebook`]) whatever the default format. Names must exist in the checkpoint
    /// and not also be in `per_tensor`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub per_tensor_codebook: BTreeMap<String, CodebookTarget>,
    /// Fine-tuning (steps, lr, distillation weight …).
    #[serde(default = "default_train")]
    pub train: TrainConfig,
    /// Starting point of the latent weights.
    #[serde(default)]
    pub init: QatInit,
    /// Scale choice.
    #[serde(default)]
    pub scales: QatScales,
    /// CPU backend of the training.
    #[serde(default)]
    pub backend: CpuBackend,
    /// Oscillation dampening of codebook tensors (Nagel et al. 2022): this weight times the
    /// mean over their weights of `(clip(w/s) − level)²` (level units) joins the loss, pulling
    /// each latent towards the level it is coded as. 0 (default) = off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dampen: f32,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

fn default_train() -> TrainConfig {
    TrainConfig {
        steps: 300,
        batch_size: 8,
        seq_len: 256,
        lr: 5e-4,
        // Decaying to zero lets the codes settle (stories260K cb4 QAT: +4.39 % against +6.16 %
        // with a floor of lr / 10).
        min_lr: 0.0,
        warmup_steps: 20,
        weight_decay: 0.0,
        grad_clip: 1.0,
        balance_coef: 0.01,
        // Pure distillation: cross-entropy on the training text would also teach the student
        // whatever the F32 model never saw (measured: +20 % "better than F32" on valid.txt from
        // learning its literal `<|endoftext|>` separators), which is not quantization quality.
        distill_alpha: 1.0,
        distill_temperature: 1.0,
        eval_every: 0,
        eval_chunks: 16,
        seed: 0,
        adam_epsilon: squish_core::train::DEFAULT_ADAM_EPSILON,
        micro_batches: squish_core::train::DEFAULT_MICRO_BATCHES,
    }
}

impl Default for QatConfig {
    /// INT4 g64 symmetric, F16 small tensors, 300 steps of distillation from MSE-init latents.
    fn default() -> Self {
        let mut quant = QuantConfig::new(
            QuantFormat::new(4, Some(64), false).expect("valid format"),
            Method::Rtn,
        );
        quant.small = SmallFormat::F16;
        QatConfig {
            quant,
            per_tensor: BTreeMap::new(),
            per_tensor_codebook: BTreeMap::new(),
            train: default_train(),
            init: QatInit::default(),
            scales: QatScales::default(),
            backend: CpuBackend::default(),
            dampen: 0.0,
        }
    }
}

/// The token streams QAT trains and validates on.
#[derive(Debug, Clone, Copy)]
pub struct QatData<'a> {
    /// Training tokens (stories concatenated, BOS-separated).
    pub train: &'a [u32],
    /// Validation tokens.
    pub valid: &'a [u32],
    /// The BOS id.
    pub bos: u32,
    /// The model QAT distils from: `None` = the input checkpoint itself (QAT only undoes the
    /// quantization error); `Some` = another F32 checkpoint of the same family and vocabulary,
    /// e.g. the unpruned baseline when the input is a pruned model, so that QAT also continues
    /// its recovery (Minitron-style distillation from the original model).
    pub teacher: Option<&'a Checkpoint>,
}

/// What the fine-tuning did (part of the [`QuantReport`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QatSummary {
    /// Latent starting point.
    pub init: QatInit,
    /// Scale choice.
    pub scales: QatScales,
    /// Optimizer steps.
    pub steps: usize,
    /// Tokens seen.
    pub tokens: usize,
    /// Wall time of the fine-tuning (s).
    pub train_seconds: f64,
    /// Loss at the first and the last step.
    pub first_loss: f64,
    /// Loss at the last step.
    pub last_loss: f64,
    /// Validation nats/token of the fake-quant model at the end.
    pub valid_nats: Option<f64>,
    /// Tensors quantized (and how many by per-tensor overrides).
    pub quantized_tensors: usize,
    /// How often codebook weights changed their code between steps (codebook tensors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_flips: Option<FlipSummary>,
}

/// Packs `w [rows, cols]` on the QAT grid: per (row, group) the scale of `scales` (F16-rounded
/// before codes are chosen, sym/asym, short last group) and nearest codes. Used by the training
/// forward and by the export alike.
pub fn qat_quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    fmt: &QuantFormat,
    scales: &QatScales,
    importance: Option<&[f32]>,
) -> Result<QTensor> {
    crate::spec::check_weights(w, rows, cols)?;
    let group = fmt.group_for(cols)?;
    if let Some(imp) = importance
        && imp.len() != cols
    {
        return Err(Error::invalid(format!(
            "{} importances for {cols} columns",
            imp.len()
        )));
    }
    let mut levels = vec![0i32; rows * cols]; // [rows, cols]
    let mut params = Vec::with_capacity(rows * cols.div_ceil(group)); // [rows, n_groups]
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for g in group_ranges(cols, group) {
            let v = &row[g.clone()];
            let p = match scales {
                QatScales::MinMax => params_for(v, fmt, 1.0, sym_div(fmt))?,
                QatScales::Mse(c) | QatScales::Learned(c) => {
                    best_params(v, importance.map(|m| &m[g.clone()]), fmt, c)?
                }
            };
            for c in g {
                levels[r * cols + c] = level(row[c], &p, fmt);
            }
            params.push(p);
        }
    }
    pack(fmt, rows, cols, group, &levels, &params)
}

/// The F16 a learned scale is stored as: nearest, kept within `[smallest subnormal, F16::MAX]`
/// (the training forward and the export round alike).
pub fn learned_scale(s: f32) -> f16 {
    let h = f16::from_f32(s.clamp(0.0, f16::MAX.to_f32()));
    if h.to_f32() > 0.0 {
        h
    } else {
        f16::from_bits(1)
    }
}

/// The learned scales `exp(log_s)` `[rows, n_groups]`, rounded to F16 by a straight-through add
/// (the value is [`learned_scale`]'s, the gradient that of `exp`), spread to every column of
/// groups of `group`: `[rows, cols]`. Errors when `log_s` is not `[rows, ⌈cols / group⌉]`.
pub fn learned_column_scales(
    log_s: &Tensor<2>,
    rows: usize,
    cols: usize,
    group: usize,
) -> Result<Tensor<2>> {
    rounded_column_scales(log_s, rows, cols, group, |s| {
        s.iter().map(|&x| learned_scale(x).to_f32()).collect()
    })
}

/// [`learned_column_scales`] with another rounding: `round` maps the host values of
/// `exp(log_s)` (row-major `[rows, n_groups]`) to the stored scales, applied by a
/// straight-through add.
pub fn rounded_column_scales(
    log_s: &Tensor<2>,
    rows: usize,
    cols: usize,
    group: usize,
    round: impl FnOnce(&[f32]) -> Vec<f32>,
) -> Result<Tensor<2>> {
    let n_groups = cols.div_ceil(group.max(1));
    if log_s.dims() != [rows, n_groups] {
        return Err(Error::invalid(format!(
            "{:?} learned scales for [{rows}, {cols}] in groups of {group}",
            log_s.dims()
        )));
    }
    let device = log_s.device();
    let s = log_s.clone().exp(); // [rows, n_groups]
    let host = tensor_to_vec(s.clone().detach())?;
    let offset: Vec<f32> = round(&host).iter().zip(&host).map(|(r, x)| r - x).collect();
    let s = s + Tensor::<2>::from_data(
        burn::tensor::TensorData::new(offset, [rows, n_groups]),
        &device,
    ); // [rows, n_groups], rounded values
    let col_group: Vec<i64> = (0..cols).map(|c| (c / group) as i64).collect();
    let col_group =
        Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(col_group, [cols]), &device);
    Ok(s.select(1, col_group)) // [rows, cols]
}

/// Packs `w [rows, cols]` with given per-(row, group) parameters `[rows, n_groups]` (nearest
/// codes, clamped): the export of learned scales.
pub fn quantize_with_params(
    w: &[f32],
    rows: usize,
    cols: usize,
    fmt: &QuantFormat,
    params: &[GroupParams],
) -> Result<QTensor> {
    crate::spec::check_weights(w, rows, cols)?;
    let group = fmt.group_for(cols)?;
    let n_groups = cols.div_ceil(group);
    if params.len() != rows * n_groups {
        return Err(Error::invalid(format!(
            "{} group parameters for {rows} rows × {n_groups} groups",
            params.len()
        )));
    }
    let levels: Vec<i32> = w
        .iter()
        .enumerate()
        .map(|(i, &x)| level(x, &params[(i / cols) * n_groups + (i % cols) / group], fmt))
        .collect();
    pack(fmt, rows, cols, group, &levels, params)
}

/// The initial latent network of a QAT run (on the backend's autodiff device): the plan of
/// [`build_plan`] and the weights of `cfg.init`. [`qat_checkpoint`] trains it; exposed for tests
/// and tools that drive the training themselves ([`crate::qat_export::export`] packs it).
pub fn qat_net(ckpt: &Checkpoint, cfg: &QatConfig, calib: Option<&Calibration>) -> Result<QatNet> {
    let plan = build_plan(ckpt, cfg, calib)?;
    let mut w = ckpt.weights.clone();
    let method = match cfg.init {
        QatInit::F32 => None,
        QatInit::Rtn => Some(Method::Rtn),
        QatInit::Mse => Some(Method::Mse(MseConfig::default())),
        QatInit::Gptq => Some(Method::Gptq(crate::GptqConfig::default())),
    };
    if let Some(method) = method {
        if method.quantizer().needs_stats() && calib.is_none() {
            return Err(Error::invalid(format!(
                "QAT init {} needs calibration statistics",
                method.name()
            )));
        }
        for e in &plan.entries {
            let [rows, cols] = e.shape[..] else {
                continue; // only 2-D weights are quantized (checked by the plan)
            };
            let stats = calib.and_then(|c| c.get(&e.name));
            let t = w.get_mut(&e.name)?;
            let v = t.to_f32(); // [rows, cols]
            let dequantized = match e.target {
                TensorTarget::Quant(format) => {
                    let spec = QuantSpec {
                        format,
                        method: method.clone(),
                    };
                    crate::quantize_tensor(&v, rows, cols, &spec, stats).map(|q| q.dequantize())
                }
                // A codebook's RTN/MSE start is its F32 weights: the net fits scales and
                // levels to them, so the first forward is the nearest-level PTQ codebook.
                // GPTQ moves the latents onto its error-fed codes (the net refits to those).
                TensorTarget::Codebook {
                    bits,
                    group,
                    scales,
                } => match &method {
                    Method::Gptq(g) => quantize_codebook(
                        &v,
                        rows,
                        cols,
                        CodebookSpec {
                            bits,
                            learned: true,
                            scales,
                        },
                        group,
                        stats,
                        Some(g),
                    )
                    .map(|c| c.dequantize()),
                    _ => continue,
                },
                _ => continue,
            }
            .map_err(|err| Error::tensor(&e.name, err.to_string()))?;
            t.data = TensorData::F32(dequantized);
        }
    }
    family_net(ckpt, &w, plan, &cfg.backend.autodiff_device())
}

/// Errors unless `teacher` can teach `student`: same family and vocabulary (distillation
/// compares their logits token by token).
pub fn check_teacher(student: &Checkpoint, teacher: &Checkpoint) -> Result<()> {
    let same_family = matches!(
        (&student.config, &teacher.config),
        (ModelConfig::Llama(_), ModelConfig::Llama(_))
            | (ModelConfig::SsmMoe(_), ModelConfig::SsmMoe(_))
    );
    if !same_family {
        return Err(Error::invalid(
            "the QAT teacher is of another model family than the checkpoint it teaches",
        ));
    }
    let (s, t) = (student.config.vocab_size(), teacher.config.vocab_size());
    if s != t {
        return Err(Error::invalid(format!(
            "the QAT teacher's vocabulary ({t}) differs from the student's ({s})"
        )));
    }
    Ok(())
}

/// A [`QatNet`] of `ckpt`'s family with weights `w` on `device`.
fn family_net(ckpt: &Checkpoint, w: &Weights, plan: QatPlan, device: &Device) -> Result<QatNet> {
    match &ckpt.config {
        ModelConfig::Llama(c) => QatNet::new(Some(Llama::from_weights(c, w, device)?), None, plan),
        ModelConfig::SsmMoe(c) => QatNet::new(
            None,
            Some(SsmMoe::from_weights(c, w, device, ScanMode::Fused)?),
            plan,
        ),
    }
}

/// QAT of `ckpt` under `cfg`: fake-quant fine-tuning with distillation from `data.teacher`
/// (default: `ckpt` itself), then the packed export. `calib` is needed by `init = gptq` and weights the MSE scale search.
/// `on_point` sees every training step. Returns the packed checkpoint (provenance stage
/// `int4_native` / `int8` by the default format, method `qat`) and the report (table row to be
/// filled by [`QuantReport::finish_row`] once written).
pub fn qat_checkpoint(
    ckpt: &Checkpoint,
    cfg: &QatConfig,
    data: &QatData,
    calib: Option<&Calibration>,
    on_point: &mut dyn FnMut(&TrainPoint),
) -> Result<(Checkpoint, QuantReport)> {
    cfg.train.validate()?;
    if let Some(t) = data.teacher {
        check_teacher(ckpt, t)?;
    }
    let net = qat_net(ckpt, cfg, calib)?;
    let ad = cfg.backend.autodiff_device();
    let tdev = cfg.backend.device();
    let teacher_ckpt = data.teacher.unwrap_or(ckpt);
    let teacher_model = family_net(
        teacher_ckpt,
        &teacher_ckpt.weights,
        f32_plan(teacher_ckpt, &net.plan.scales)?,
        &tdev,
    )?;
    let teacher = |tokens: &[Vec<u32>]| -> Result<Tensor<3>> {
        let (logits, _) = teacher_model.train_forward(tokens)?; // [batch, seq, vocab]
        Ok(Tensor::from_data(logits.into_data(), &ad))
    };
    let t0 = std::time::Instant::now();
    let flips = Arc::clone(&net.flips);
    let (net, log) = train(
        net,
        data.train,
        data.valid,
        data.bos,
        &cfg.train,
        Some(&teacher),
        |p| {
            flips.end_step();
            on_point(p)
        },
    )?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let summary = crate::qat::QatSummary {
        init: cfg.init,
        scales: cfg.scales.clone(),
        steps: cfg.train.steps,
        tokens: cfg.train.steps * cfg.train.batch_size * cfg.train.seq_len,
        train_seconds,
        first_loss: log.first().map_or(f64::NAN, |p| p.loss),
        last_loss: log.last().map_or(f64::NAN, |p| p.loss),
        valid_nats: log.last().and_then(|p| p.valid_nats),
        quantized_tensors: net
            .plan
            .entries
            .iter()
            .filter(|e| {
                matches!(
                    e.target,
                    TensorTarget::Quant(_) | TensorTarget::Codebook { .. }
                )
            })
            .count(),
        code_flips: flips.summary(),
    };
    export(ckpt, &net, cfg, calib, summary)
}
