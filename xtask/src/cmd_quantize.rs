//! `cargo xtask quantize`: an F32 checkpoint → packed INT4/INT8 checkpoint by squish-quant's
//! stage ([`squish_quant::run`], as the pipeline's `int4_native`): the flags map onto
//! [`QuantSettings`]; a post-training method or QAT (`--method qat --steps N --lr X`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use squish_core::codebook::CbScales;
use squish_core::data::{
    DEFAULT_CALIBRATION_STORIES, EvalMode, EvalText, calibration_subset, locate_corpus_readonly,
    read_stories, story_tokens,
};
use squish_core::tokenizer::Tokenizer;
use squish_kernels::measure::{MeasureOptions, measure, native_perplexity};
use squish_quant::{
    AwqConfig, CodebookMode, GptqConfig, MseConfig, QatConfig, QatInit, QatScales, QatSettings,
    QuantMethod, QuantSettings, SmallFormat, StageInput, calibration_windows,
};

use crate::common::{load_checkpoint, save_with_tokenizer};
use crate::stage_quant::{quant_progress, show_quant_event};

/// Arguments of `quantize`.
#[derive(clap::Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// F32 checkpoint (.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output checkpoint (its tokenizer is written beside it as `tokenizer-<sha8>.bin`).
    #[arg(long)]
    pub out: PathBuf,
    /// Bits per code: 4 or 8 (uniform grid); 2, 3 or 4 with `--codebook tensor`.
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Levels: `none` = the integer grid (INT4/INT8); `tensor` = a learned codebook per tensor;
    /// `uniform` = the codebook format holding the integer grid (symmetric; methods rtn, gptq,
    /// and qat with `tensor`, which trains the levels and scales with the weights).
    #[arg(long, default_value = "none")]
    pub codebook: String,
    /// A codebook's scales: `log8` = one byte per group on a logarithmic grid with F16 levels
    /// (the default), `f16` = F16 scales with F32 levels.
    #[arg(long, default_value = "log8")]
    pub cb_scales: String,
    /// Group size along the input dimension, or `row` for one group per row; `auto` = 64 with a
    /// codebook (its scales and levels are what a 4-bit budget can afford), 32 otherwise.
    #[arg(long, default_value = "auto")]
    pub group: String,
    /// Method: rtn, mse, gptq, qat (fake-quant fine-tuning with distillation from the input).
    #[arg(long, default_value = "rtn")]
    pub method: String,
    /// QAT: optimizer steps (1000 × 8 × 256 tokens ≈ one pass over TinyStories' train.txt).
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// QAT: peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// QAT: the learning rate the cosine decays to. 0 lets the codes settle (stories260K cb4:
    /// +4.39 % at 0 against +6.16 % at a tenth of `--lr`).
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f64,
    /// QAT: sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// QAT: tokens per training sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// QAT: linear warmup steps.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// QAT: weight of the distillation KL term (the rest is cross-entropy on the calibration
    /// text's stories). 0.5 measured best on stories260K (cb4 1000 steps +2.42 % vs +4.42 % at
    /// 1.0); part of that is fine-tuning: the same recipe takes a near-lossless INT8 QAT to
    /// −1.47 % below the F32 model.
    #[arg(long, default_value_t = 0.5)]
    pub distill_alpha: f32,
    /// QAT: latent starting point: f32, rtn, mse, gptq.
    #[arg(long, default_value = "mse")]
    pub qat_init: String,
    /// QAT: AdamW ε (burn's default 1e-5 damps the tiny gradients of a distillation loss).
    #[arg(long, default_value_t = squish_core::train::DEFAULT_ADAM_EPSILON)]
    pub adam_eps: f32,
    /// QAT: scale choice: minmax or mse (recomputed every step), or learned (LSQ, symmetric only).
    #[arg(long, default_value = "mse")]
    pub qat_scales: String,
    /// QAT: oscillation dampening weight of codebook tensors (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub qat_dampen: f32,
    /// Asymmetric (zero points) instead of symmetric.
    #[arg(long)]
    pub asym: bool,
    /// AWQ per-channel scaling before quantizing (folded only where exact).
    #[arg(long)]
    pub awq: bool,
    /// GPTQ: process columns by decreasing Hessian diagonal (static groups).
    #[arg(long)]
    pub act_order: bool,
    /// GPTQ: dampening fraction of the mean Hessian diagonal.
    #[arg(long, default_value_t = 0.01)]
    pub percdamp: f64,
    /// GPTQ: choose group scales by a weighted clipping search instead of min-max.
    #[arg(long)]
    pub clip_search: bool,
    /// MSE: do not weight errors by calibration second moments.
    #[arg(long)]
    pub unweighted: bool,
    /// Keep the embedding / classifier unquantized.
    #[arg(long)]
    pub keep_embedding: bool,
    /// Storage of the unquantized small tensors (norms …): f32 or f16; `auto` = f16 with a
    /// codebook, f32 otherwise.
    #[arg(long, default_value = "auto")]
    pub small: String,
    /// Calibration text (stories; default: TinyStories train.txt from the shared data dir).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Calibration stories.
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_STORIES)]
    pub calib_stories: usize,
    /// Calibration subset seed.
    #[arg(long, default_value_t = 0)]
    pub calib_seed: u64,
    /// Calibration window length (tokens).
    #[arg(long, default_value_t = 256)]
    pub calib_window: usize,
    /// Evaluate perplexity of the result (and of the input, for ΔPPL) on this text.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Known F32 perplexity of the input on `--eval` (skips re-measuring it).
    #[arg(long)]
    pub base_ppl: Option<f64>,
    /// Evaluation context length.
    #[arg(long, default_value_t = 256)]
    pub ctx: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// The stage settings the flags describe.
fn settings(a: &QuantizeArgs) -> Result<QuantSettings> {
    let codebook = CodebookMode::parse(&a.codebook)?;
    let with_codebook = codebook != CodebookMode::None;
    let group = if a.group == "row" {
        0
    } else if a.group == "auto" {
        if with_codebook { 64 } else { 32 }
    } else {
        a.group
            .parse::<usize>()
            .ok()
            .filter(|&g| g > 0)
            .with_context(|| {
                format!(
                    "--group {} is neither a positive number, `row` nor `auto`",
                    a.group
                )
            })?
    };
    let method = QuantMethod::parse(&a.method)?;
    let small = match a.small.as_str() {
        "f32" => SmallFormat::F32,
        "f16" => SmallFormat::F16,
        "auto" if with_codebook => SmallFormat::F16,
        "auto" => SmallFormat::F32,
        other => bail!("unknown --small {other} (f32, f16, auto)"),
    };
    let s = QuantSettings {
        bits: a.bits,
        group,
        asym: a.asym,
        method,
        quantize_embedding: !a.keep_embedding,
        small,
        awq: a.awq.then(AwqConfig::default),
        gptq: GptqConfig {
            percdamp: a.percdamp,
            act_order: a.act_order,
            clip_search: a.clip_search,
            ..GptqConfig::default()
        },
        mse: MseConfig {
            weighted: !a.unweighted,
            ..MseConfig::default()
        },
        qat: (method == QuantMethod::Qat)
            .then(|| qat_settings(a))
            .transpose()?,
        codebook,
        codebook_scales: match a.cb_scales.as_str() {
            "log8" => CbScales::Log8,
            "f16" => CbScales::F16,
            other => bail!("unknown --cb-scales {other} (log8, f16)"),
        },
    };
    s.quant_config()?;
    s.qat_settings()?;
    Ok(s)
}

/// QAT's settings from the flags (training defaults of [`QatConfig::default`] otherwise).
fn qat_settings(a: &QuantizeArgs) -> Result<QatSettings> {
    let init = match a.qat_init.as_str() {
        "f32" => QatInit::F32,
        "rtn" => QatInit::Rtn,
        "mse" => QatInit::Mse,
        "gptq" => QatInit::Gptq,
        other => bail!("unknown --qat-init {other} (f32, rtn, mse, gptq)"),
    };
    let scales = match a.qat_scales.as_str() {
        "minmax" => QatScales::MinMax,
        "mse" => QatScales::default(),
        "learned" => match QatScales::default() {
            QatScales::Mse(m) => QatScales::Learned(m),
            other => other,
        },
        other => bail!("unknown --qat-scales {other} (minmax, mse, learned)"),
    };
    let mut train = QatConfig::default().train;
    train.steps = a.steps;
    train.lr = a.lr;
    train.min_lr = a.min_lr;
    train.batch_size = a.batch_size;
    train.seq_len = a.seq_len;
    train.warmup_steps = a.warmup;
    train.distill_alpha = a.distill_alpha;
    train.adam_epsilon = a.adam_eps;
    train.validate()?;
    Ok(QatSettings {
        train,
        init,
        scales,
        dampen: a.qat_dampen,
    })
}

/// The calibration text: `--calib`, else the corpus's train.txt.
fn calib_path(a: &QuantizeArgs) -> Result<PathBuf> {
    match &a.calib {
        Some(p) => Ok(p.clone()),
        None => locate_corpus_readonly()
            .map(|(t, _)| t)
            .context("no calibration text: pass --calib or set $SQUISH_DATA"),
    }
}

/// Entry point of `quantize`.
pub fn run(a: &QuantizeArgs) -> Result<()> {
    let settings = settings(a)?;
    crate::common::prepare_out(&a.out)?;
    let loaded = load_checkpoint(&a.checkpoint)?;
    crate::common::require_unquantized(&loaded)?;
    let tok = &loaded.tokenizer;
    // Calibration windows when the method needs statistics; QAT trains on every story of the
    // calibration text (each BOS-first) and validates on --eval or the corpus's valid.txt.
    let stories = if settings.needs_calibration() || settings.method == QuantMethod::Qat {
        read_stories(&calib_path(a)?)?
    } else {
        Vec::new()
    };
    let calib = if settings.needs_calibration() {
        let subset = calibration_subset(&stories, a.calib_stories, a.calib_seed);
        calibration_windows(tok, &subset, a.calib_window)
    } else {
        Vec::new()
    };
    let eval_path = || -> Result<PathBuf> {
        match &a.eval {
            Some(p) => Ok(p.clone()),
            None => locate_corpus_readonly()
                .map(|(_, v)| v)
                .context("no validation text: pass --eval or set $SQUISH_DATA"),
        }
    };
    let (train, valid) = if settings.method == QuantMethod::Qat {
        let valid = EvalText::load(&eval_path()?, EvalMode::Stories, None)?.tokens(tok);
        (story_tokens(tok, &stories), valid)
    } else {
        (Vec::new(), Vec::new())
    };
    let input = StageInput {
        ckpt: &loaded.ckpt,
        calib: &calib,
        train: &train,
        valid: &valid,
        bos: tok.bos_id(),
        teacher: None,
    };
    let t0 = std::time::Instant::now();
    let pb = quant_progress(&settings)?;
    let out = squish_quant::run(&input, &settings, &mut |e| {
        if let squish_quant::QuantEvent::Calibrated {
            windows, tokens, ..
        } = e
        {
            pb.println(format!("calibration: {windows} windows, {tokens} tokens"));
        }
        show_quant_event(&pb, e)
    })?;
    pb.finish_and_clear();
    let mut report = out.report;
    eprintln!(
        "quantized {} tensors with {} in {:.1} s",
        report.tensors.len(),
        report.method,
        t0.elapsed().as_secs_f64()
    );
    if let Some(s) = &report.qat {
        eprintln!(
            "QAT: {} steps, loss {:.4} → {:.4}, {:.0} s",
            s.steps, s.first_loss, s.last_loss, s.train_seconds
        );
        if let Some(f) = &s.code_flips {
            eprintln!(
                "codes changed per step ({} codebook weights): {:.4} % over the first tenth of \
                 the steps, {:.4} % over the last tenth, {:.4} % at the last step",
                f.weights,
                100.0 * f.first_tenth,
                100.0 * f.last_tenth,
                100.0 * f.last_step
            );
        }
    }
    let q = save_with_tokenizer(&loaded, out.checkpoint, &a.out, |_| Ok(()))?;
    let file_bytes = std::fs::metadata(&a.out)?.len();
    let (ppl, base) = match &a.eval {
        Some(data) => {
            // On the native runtime, as every pipeline stage measures.
            let text = EvalText::load(data, EvalMode::Stories, None)?;
            let tokens = text.tokens(tok);
            let opts = MeasureOptions {
                eval_ctx: a.ctx,
                ..MeasureOptions::default()
            };
            let m = measure(&a.out, &q, tok, &tokens, &opts, &mut |_, _| {})?;
            println!("greedy sample: {}", m.sample);
            let b = match a.base_ppl {
                Some(b) => b,
                None => {
                    native_perplexity(&loaded.ckpt, &tokens, a.ctx, tok.bos_id(), &mut |_, _| {})?
                        .ppl
                }
            };
            (Some(m.ppl.ppl), Some(b))
        }
        None => (None, a.base_ppl),
    };
    report.finish_row(file_bytes, ppl, base);
    if let Some(p) = &a.report {
        squish_core::fsutil::atomic_write(p, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    println!(
        "wrote {} ({} bytes, {:.3} bits/param over {} F32 parameters; kept F32/F16 tensors: {} bytes = {:.2} % of tensor bytes)",
        a.out.display(),
        file_bytes,
        report.row.bits_per_param.unwrap_or(0.0),
        report.parameters,
        report.kept_bytes,
        100.0 * report.kept_share
    );
    if let Some(e) = report.mean_output_error() {
        println!("mean relative layer-output error on calibration inputs: {e:.4}");
    }
    if let (Some(p), Some(b)) = (ppl, base) {
        println!(
            "PPL {p:.4} (F32 {b:.4}, Δ {:+.2} %)",
            report.row.delta_ppl_pct.unwrap_or(0.0)
        );
    }
    println!("| method | bits | group | sym/asym | file bytes | bits/param | PPL | ΔPPL |");
    println!("{}", report.markdown_row());
    Ok(())
}

#[cfg(test)]
mod tests;
