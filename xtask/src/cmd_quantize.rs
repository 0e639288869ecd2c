//! `cargo xtask quantize`: an F32 checkpoint → packed INT4/INT8 checkpoint (squish-quant), by a
//! post-training method or by QAT (`--method qat --steps N --lr X`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use squish_core::checkpoint;
use squish_core::data::{
    DEFAULT_CALIBRATION_STORIES, EvalMode, EvalText, calibration_subset, locate_corpus_readonly,
    read_stories, story_tokens,
};
use squish_core::model::CpuBackend;
use squish_core::tokenizer::Tokenizer;
use squish_quant::{
    AwqConfig, Calibration, GptqConfig, Method, MseConfig, QatConfig, QatData, QatInit, QatScales,
    QuantConfig, QuantFormat, SmallFormat, calibration_windows, qat_checkpoint,
    quantize_checkpoint,
};

use crate::cmd_bench::Engine;
use crate::cmd_eval::evaluate_with;
use crate::common::{load_checkpoint, place_tokenizer};

/// Arguments of `quantize`.
#[derive(clap::Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// F32 checkpoint (.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output checkpoint (tokenizer.bin is written beside it).
    #[arg(long)]
    pub out: PathBuf,
    /// Bits per code: 4 or 8.
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Group size along the input dimension, or `row` for one group per row.
    #[arg(long, default_value = "32")]
    pub group: String,
    /// Method: rtn, mse, gptq, qat (fake-quant fine-tuning with distillation from the input).
    #[arg(long, default_value = "rtn")]
    pub method: String,
    /// QAT: optimizer steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// QAT: peak learning rate (cosine decay to a tenth).
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// QAT: sequences per step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// QAT: tokens per training sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// QAT: linear warmup steps.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// QAT: weight of the distillation KL term (the rest is cross-entropy on the text).
    #[arg(long, default_value_t = 1.0)]
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
    /// Storage of the unquantized small tensors (norms …): f32 or f16.
    #[arg(long, default_value = "f32")]
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

fn config(a: &QuantizeArgs) -> Result<QuantConfig> {
    let group = if a.group == "row" {
        None
    } else {
        Some(
            a.group
                .parse::<usize>()
                .with_context(|| format!("--group {} is neither a number nor `row`", a.group))?,
        )
    };
    let format = QuantFormat::new(a.bits, group, a.asym)?;
    let method = match a.method.as_str() {
        "rtn" => Method::Rtn,
        "mse" => Method::Mse(MseConfig {
            weighted: !a.unweighted,
            ..MseConfig::default()
        }),
        "gptq" => Method::Gptq(GptqConfig {
            percdamp: a.percdamp,
            act_order: a.act_order,
            clip_search: a.clip_search,
            ..GptqConfig::default()
        }),
        // QAT's grid is chosen by --qat-scales; the method here only names the default.
        "qat" => Method::Rtn,
        other => bail!("unknown --method {other} (rtn, mse, gptq, qat)"),
    };
    let small = match a.small.as_str() {
        "f32" => SmallFormat::F32,
        "f16" => SmallFormat::F16,
        other => bail!("unknown --small {other} (f32, f16)"),
    };
    let mut cfg = QuantConfig::new(format, method);
    cfg.awq = a.awq.then(AwqConfig::default);
    cfg.quantize_embedding = !a.keep_embedding;
    cfg.small = small;
    Ok(cfg)
}

fn qat_config(a: &QuantizeArgs, quant: QuantConfig) -> Result<QatConfig> {
    let mut c = QatConfig {
        quant,
        ..QatConfig::default()
    };
    c.init = match a.qat_init.as_str() {
        "f32" => QatInit::F32,
        "rtn" => QatInit::Rtn,
        "mse" => QatInit::Mse,
        "gptq" => QatInit::Gptq,
        other => bail!("unknown --qat-init {other} (f32, rtn, mse, gptq)"),
    };
    c.scales = match a.qat_scales.as_str() {
        "minmax" => QatScales::MinMax,
        "mse" => QatScales::default(),
        "learned" => match QatScales::default() {
            QatScales::Mse(m) => QatScales::Learned(m),
            other => other,
        },
        other => bail!("unknown --qat-scales {other} (minmax, mse, learned)"),
    };
    c.train.steps = a.steps;
    c.train.lr = a.lr;
    c.train.min_lr = a.lr / 10.0;
    c.train.batch_size = a.batch_size;
    c.train.seq_len = a.seq_len;
    c.train.warmup_steps = a.warmup;
    c.train.distill_alpha = a.distill_alpha;
    c.train.adam_epsilon = a.adam_eps;
    c.backend = CpuBackend::from_env()?;
    c.train.validate()?;
    Ok(c)
}

/// Entry point of `quantize`.
pub fn run(a: &QuantizeArgs) -> Result<()> {
    let cfg = config(a)?;
    let qat = (a.method == "qat")
        .then(|| qat_config(a, cfg.clone()))
        .transpose()?;
    let loaded = load_checkpoint(&a.checkpoint)?;
    let needs_calib = matches!(
        cfg.method,
        Method::Gptq(_) | Method::Mse(MseConfig { weighted: true, .. })
    ) || cfg.awq.is_some()
        || qat.is_some();
    let t0 = std::time::Instant::now();
    let calib_path = || -> Result<PathBuf> {
        match &a.calib {
            Some(p) => Ok(p.clone()),
            None => locate_corpus_readonly()
                .map(|(t, _)| t)
                .context("no calibration text: pass --calib or set $SQUISH_DATA"),
        }
    };
    let calib = if needs_calib {
        let path = calib_path()?;
        let stories = read_stories(&path)?;
        let subset = calibration_subset(&stories, a.calib_stories, a.calib_seed);
        let windows = calibration_windows(&loaded.tokenizer, &subset, a.calib_window);
        let device = CpuBackend::from_env()?.device();
        let c = Calibration::collect(&loaded.ckpt, &windows, &device)?;
        eprintln!(
            "calibration: {} stories from {} → {} windows, {} tokens ({:.1} s)",
            subset.len(),
            path.display(),
            c.windows,
            c.tokens,
            t0.elapsed().as_secs_f64()
        );
        Some(c)
    } else {
        None
    };
    let t1 = std::time::Instant::now();
    let (mut out, mut report) = match &qat {
        None => quantize_checkpoint(&loaded.ckpt, &cfg, calib.as_ref())?,
        Some(qc) => {
            // Trains on the calibration text (all of it), validates on --eval or the corpus's
            // validation split.
            // Stories are joined with BOS (as llama2.c pretokenizes), not with the literal
            // `<|endoftext|>` text, so the student cannot win perplexity by learning separators.
            let stories = read_stories(&calib_path()?)?;
            let valid_path = match &a.eval {
                Some(p) => p.clone(),
                None => locate_corpus_readonly()
                    .map(|(_, v)| v)
                    .context("no validation text: pass --eval or set $SQUISH_DATA")?,
            };
            let tok = &loaded.tokenizer;
            let train = story_tokens(tok, &stories);
            let valid = EvalText::load(&valid_path, EvalMode::Stories, None)?.tokens(tok);
            let data = QatData {
                train: &train,
                valid: &valid,
                bos: tok.bos_id(),
            };
            let every = (qc.train.steps / 20).max(1);
            qat_checkpoint(&loaded.ckpt, qc, &data, calib.as_ref(), &mut |p| {
                if p.step % every == 0 || p.valid_nats.is_some() {
                    eprintln!(
                        "qat step {}/{}: loss {:.4}, lr {:.2e}, {:.0} tok/s{}",
                        p.step,
                        qc.train.steps,
                        p.loss,
                        p.lr,
                        p.tokens_per_s,
                        p.valid_nats
                            .map_or(String::new(), |v| format!(", valid {v:.4} nats/token"))
                    );
                }
            })?
        }
    };
    eprintln!(
        "quantized {} tensors with {} in {:.1} s",
        report.tensors.len(),
        report.method,
        t1.elapsed().as_secs_f64()
    );
    let tsrc = loaded.path.parent().unwrap_or(Path::new(".")).join(
        &loaded
            .ckpt
            .tokenizer
            .as_ref()
            .expect("load_checkpoint checked it")
            .file,
    );
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    out.tokenizer = Some(place_tokenizer(&tsrc, &a.out)?);
    checkpoint::save(&out, &a.out)?;
    let file_bytes = std::fs::metadata(&a.out)?.len();
    let (ppl, base) = match &a.eval {
        Some(data) => {
            // On the native runtime, as every pipeline stage measures.
            let text = EvalText::load(data, EvalMode::Stories, None)?;
            let native = |c: &Path| {
                evaluate_with(
                    c,
                    &text,
                    a.ctx,
                    "llama-cpp",
                    8,
                    "flex",
                    Engine::Native,
                    false,
                )
            };
            let q = native(&a.out)?.ppl;
            let b = match a.base_ppl {
                Some(b) => b,
                None => native(&a.checkpoint)?.ppl,
            };
            (Some(q), Some(b))
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
