//! `cargo xtask quantize`: an F32 checkpoint → packed INT4/INT8 checkpoint (squish-quant).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use squish_core::checkpoint;
use squish_core::data::{
    DEFAULT_CALIBRATION_STORIES, calibration_subset, locate_corpus_readonly, read_stories,
};
use squish_core::model::CpuBackend;
use squish_quant::{
    AwqConfig, Calibration, GptqConfig, Method, MseConfig, QuantConfig, QuantFormat, SmallFormat,
    calibration_windows, quantize_checkpoint,
};

use crate::cmd_eval::evaluate;
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
    /// Method: rtn, mse, gptq.
    #[arg(long, default_value = "rtn")]
    pub method: String,
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
        other => bail!("unknown --method {other} (rtn, mse, gptq)"),
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

/// Entry point of `quantize`.
pub fn run(a: &QuantizeArgs) -> Result<()> {
    let cfg = config(a)?;
    let loaded = load_checkpoint(&a.checkpoint)?;
    let needs_calib = matches!(
        cfg.method,
        Method::Gptq(_) | Method::Mse(MseConfig { weighted: true, .. })
    ) || cfg.awq.is_some();
    let t0 = std::time::Instant::now();
    let calib = if needs_calib {
        let path = match &a.calib {
            Some(p) => p.clone(),
            None => locate_corpus_readonly()
                .map(|(t, _)| t)
                .context("no calibration text: pass --calib or set $SQUISH_DATA")?,
        };
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
    let (mut out, mut report) = quantize_checkpoint(&loaded.ckpt, &cfg, calib.as_ref())?;
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
            let q = evaluate(&a.out, data, a.ctx, "llama-cpp", 8, "flex", false)?.ppl;
            let b = match a.base_ppl {
                Some(b) => b,
                None => evaluate(&a.checkpoint, data, a.ctx, "llama-cpp", 8, "flex", false)?.ppl,
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
