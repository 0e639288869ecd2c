//! `cargo xtask mixed`: an F32 checkpoint → mixed-precision checkpoint by squish-mixed's stage
//! ([`squish_mixed::run`], as the pipeline's `mixed_precision`): the flags map onto
//! [`MixedStageConfig`]; per-tensor F16/INT8/INT4/codebook formats from measured sensitivity
//! under a byte, bits/param or ΔPPL budget, then QAT of the chosen mix (`--qat-steps`, distilled
//! from the input; 0 = the post-training mix).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use squish_core::data::{
    DEFAULT_CALIBRATION_STORIES, EvalMode, EvalText, calibration_subset, locate_corpus_readonly,
    read_stories, story_tokens,
};
use squish_core::tokenizer::Tokenizer;
use squish_mixed::{
    Budget, CandidateFormat, MixedConfig, MixedEvent, MixedStageConfig, Objective, StageInput,
    check_budget, codebook_candidates, default_candidates, frontier_svg,
};
use squish_quant::{QatConfig, QatInit, QatScales, QatSettings, QuantEvent, calibration_windows};

use squish_kernels::measure::{MeasureOptions, measure};

use crate::common::{load_checkpoint, progress_bar, save_with_tokenizer};

/// Arguments of `mixed`.
#[derive(clap::Args, Debug, Clone)]
pub struct MixedArgs {
    /// F32 checkpoint (.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output checkpoint (its tokenizer is written beside it as `tokenizer-<sha8>.bin`).
    #[arg(long)]
    pub out: PathBuf,
    /// Budget: file bytes on disk.
    #[arg(long, group = "budget")]
    pub budget_bytes: Option<u64>,
    /// Budget: file bytes × 8 / parameters.
    #[arg(long, group = "budget")]
    pub budget_bpp: Option<f64>,
    /// Budget: fewest bytes with predicted (and, with --eval, measured) ΔPPL ≤ P percent.
    #[arg(long, group = "budget")]
    pub max_dppl: Option<f64>,
    /// Candidate formats, comma-separated (default: f16, int8-row-sym, int8-g64-sym,
    /// int4-{g32,g64,row}-{sym,asym} and the learned codebooks cb2-g64, cb3-g64, cb4-g64).
    #[arg(long, value_delimiter = ',')]
    pub candidates: Vec<String>,
    /// What the allocation minimises: kl (mean KL to the F32 model) or dnats (Δ next-token loss).
    #[arg(long, default_value = "kl")]
    pub objective: String,
    /// Calibration text (stories; default: TinyStories train.txt from the shared data dir).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Calibration stories (GPTQ statistics; the first --sens-windows windows measure
    /// sensitivities).
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_STORIES)]
    pub calib_stories: usize,
    /// Calibration windows used for the sensitivity runs.
    #[arg(long, default_value_t = 32)]
    pub sens_windows: usize,
    /// Without GPTQ (no calibration statistics): MSE/RTN codes and a weight-error proxy.
    #[arg(long)]
    pub no_gptq: bool,
    /// Perplexity text (llama-cpp protocol, ctx 256): measured PPL, additivity, frontier, and
    /// QAT's validation (with QAT and no --eval: the corpus's valid.txt).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Mixed points on the frontier.
    #[arg(long, default_value_t = 8)]
    pub frontier_points: usize,
    /// Measure only the chosen mix (not every frontier / uniform point).
    #[arg(long)]
    pub no_frontier: bool,
    /// Sensitivity cache directory (default: `<out dir>/mixed_cache`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the Pareto frontier SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// QAT of the chosen mix: optimizer steps (8 × 256 tokens each, lr 1e-3 decaying to 0,
    /// distilled from the input and trained on the calibration text's stories); 0 = no QAT.
    /// 8000 (≈ 33 min on 2 cores for stories260K) is what the 3.5 and 2.75 bits/param mixes need:
    /// +4.90 % / +19.04 % vs F32, where 1000 steps leave the 3.5 mix at +16.84 %.
    #[arg(long, default_value_t = 8000)]
    pub qat_steps: usize,
    /// QAT: peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub qat_lr: f64,
    /// QAT: oscillation dampening of the mix's codebook tensors (`QatConfig::dampen`); 0 = off.
    /// 10 by default: the 2- and 3-bit codebooks that dominate sub-4-bit mixes oscillate.
    #[arg(long, default_value_t = 10.0)]
    pub qat_dampen: f32,
    /// QAT: weight of the distillation KL term (the rest is cross-entropy on the calibration
    /// text's stories); 0.5 as `cargo xtask quantize`.
    #[arg(long, default_value_t = 0.5)]
    pub qat_distill_alpha: f32,
}

/// The QAT of the mix: `--qat-steps` steps of [`QatConfig::default`]'s training (batch 8 × 256),
/// the learning rate decaying to 0, half KL / half cross-entropy by default, MSE-initialised
/// latents; `None` for 0 steps.
fn qat_settings(a: &MixedArgs) -> Result<Option<QatSettings>> {
    if a.qat_steps == 0 {
        return Ok(None);
    }
    let mut train = QatConfig::default().train;
    train.steps = a.qat_steps;
    train.lr = a.qat_lr;
    train.min_lr = 0.0;
    train.batch_size = 8;
    train.seq_len = 256;
    train.distill_alpha = a.qat_distill_alpha;
    train.validate()?;
    Ok(Some(QatSettings {
        train,
        init: QatInit::Mse,
        scales: QatScales::default(),
        dampen: a.qat_dampen,
    }))
}

fn config(a: &MixedArgs, out_dir: &Path) -> Result<MixedConfig> {
    let budget = match (a.budget_bytes, a.budget_bpp, a.max_dppl) {
        (Some(n), None, None) => Budget::Bytes(n),
        (None, Some(b), None) => Budget::BitsPerParam(b),
        (None, None, Some(p)) => Budget::MaxDppl(p),
        _ => bail!("give exactly one of --budget-bytes, --budget-bpp, --max-dppl"),
    };
    let mut cfg = MixedConfig {
        budget,
        calib_windows: a.sens_windows,
        cache_dir: Some(
            a.cache_dir
                .clone()
                .unwrap_or_else(|| out_dir.join("mixed_cache")),
        ),
        frontier_points: a.frontier_points,
        measure_frontier: !a.no_frontier,
        // The global `--threads` (a flag of this subcommand's own would shadow it, and the QAT
        // below would train on its value).
        threads: squish_core::threads::threads(),
        gptq: !a.no_gptq,
        objective: match a.objective.as_str() {
            "dnats" => Objective::DeltaNats,
            "kl" => Objective::Kl,
            other => bail!("unknown --objective {other} (dnats, kl)"),
        },
        candidates: default_candidates()
            .into_iter()
            .chain(codebook_candidates())
            .collect(),
        ..MixedConfig::default()
    };
    if !a.candidates.is_empty() {
        cfg.candidates = a
            .candidates
            .iter()
            .map(|c| CandidateFormat::parse(c.trim()))
            .collect::<squish_core::Result<_>>()?;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Entry point of `mixed`.
pub fn run(a: &MixedArgs) -> Result<()> {
    let out_dir = a.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    let cfg = MixedStageConfig {
        mixed: config(a, &out_dir)?,
        qat: qat_settings(a)?,
    };
    crate::common::prepare_out(&a.out)?;
    let loaded = load_checkpoint(&a.checkpoint)?;
    crate::common::require_unquantized(&loaded)?;
    let tok = &loaded.tokenizer;
    let path = match &a.calib {
        Some(p) => p.clone(),
        None => locate_corpus_readonly()
            .map(|(t, _)| t)
            .context("no calibration text: pass --calib or set $SQUISH_DATA")?,
    };
    let stories = read_stories(&path)?;
    let windows = calibration_windows(tok, &calibration_subset(&stories, a.calib_stories, 0), 256);
    // QAT validates on held-out text: --eval, else the corpus's valid.txt.
    let eval_path = match (&a.eval, &cfg.qat) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(_)) => Some(locate_corpus_readonly().map(|(_, v)| v).context(
            "QAT of the mix needs validation text: pass --eval, or --qat-steps 0 for no QAT",
        )?),
        (None, None) => None,
    };
    let valid = match &eval_path {
        Some(p) => EvalText::load(p, EvalMode::Stories, None)
            .with_context(|| format!("reading the evaluation text {}", p.display()))?
            .tokens(tok),
        None => Vec::new(),
    };
    let train = match cfg.qat {
        Some(_) => story_tokens(tok, &stories),
        None => Vec::new(),
    };
    let input = StageInput {
        ckpt: &loaded.ckpt,
        calib: &windows,
        train: &train,
        valid: &valid,
        bos: tok.bos_id(),
        teacher: None,
    };
    let pb = progress_bar(0, "sensitivity");
    let qat_pb = progress_bar(a.qat_steps as u64, "QAT of the mix");
    let mut on_event = |e: &MixedEvent| match e {
        MixedEvent::Sensitivity { done, total, .. } => {
            pb.set_length(*total as u64);
            pb.set_position(*done as u64);
        }
        MixedEvent::CacheHit { path } => eprintln!("sensitivities from {}", path.display()),
        MixedEvent::Quant(QuantEvent::Calibrated {
            windows,
            tokens,
            seconds,
        }) => eprintln!("calibration: {windows} windows, {tokens} tokens ({seconds:.1} s)"),
        MixedEvent::Quant(q) => {
            pb.finish_and_clear(); // the sensitivities are done; one bar at a time
            crate::stage_quant::show_quant_event(&qat_pb, q)
        }
        MixedEvent::QatExported {
            mix_bytes,
            qat_bytes,
        } => eprintln!("QAT of the chosen mix: {mix_bytes} → {qat_bytes} bytes"),
        MixedEvent::Measured {
            label,
            file_bytes,
            ppl,
        } => pb.println(format!("PPL {ppl:.4}  {file_bytes:>9} B  {label}")),
        other => tracing::info!("{other:?}"),
    };
    let out = squish_mixed::run(&input, &cfg, &mut on_event)?;
    pb.finish_and_clear();
    qat_pb.finish_and_clear();
    let qat = out.report.qat;
    let report = out.report.mixed;
    // The budget holds for the file as written, with the output's tokenizer reference. (The
    // report's `byte_limit` is the mix's: the budget less QAT_RESERVE_BYTES when QAT ran.)
    let limit = cfg
        .mixed
        .budget
        .byte_limit(loaded.ckpt.weights.param_count());
    let saved = save_with_tokenizer(&loaded, out.checkpoint, &a.out, |c| {
        check_budget(c, limit)?;
        Ok(())
    })?;
    let file_bytes = std::fs::metadata(&a.out)?.len();
    // The mix's own measurement is of the post-training mix; after QAT the written file is
    // measured again (perplexity, llama-cpp protocol, ctx 256, and a greedy sample).
    let measured = match (&qat, valid.is_empty()) {
        (Some(_), false) => {
            let opts = MeasureOptions::default();
            Some(measure(&a.out, &saved, tok, &valid, &opts, &mut |_, _| {})?)
        }
        _ => None,
    };
    let qat_ppl = measured.as_ref().map(|m| m.ppl.ppl);
    let sample = measured.as_ref().map(|m| m.sample.clone());
    if let Some(p) = &a.report {
        let out = MixedOutput {
            mixed: &report,
            qat: qat.as_ref(),
            qat_ppl,
            greedy_sample: sample.as_deref(),
            file_bytes,
        };
        squish_core::fsutil::atomic_write(p, serde_json::to_string_pretty(&out)?.as_bytes())?;
    }
    if let Some(p) = &a.svg {
        squish_core::fsutil::atomic_write(p, frontier_svg(&report).as_bytes())?;
    }
    println!(
        "wrote {} ({file_bytes} bytes, {:.3} bits/param over {} parameters); formats {:?}",
        a.out.display(),
        file_bytes as f64 * 8.0 / report.parameters as f64,
        report.parameters,
        report.format_counts()
    );
    println!(
        "predicted Δnats {:.5} → PPL {}; measured PPL {} (F32 {}); prediction error {}",
        report.predicted_dnats,
        fmt(report.predicted_ppl),
        fmt(report.measured_ppl),
        fmt(report.base_ppl),
        report
            .prediction_error_pct
            .map_or("-".into(), |e| format!("{e:+.2} %"))
    );
    if let Some(q) = &qat {
        let dppl = match (qat_ppl, report.base_ppl) {
            (Some(p), Some(b)) => format!(" ({:+.2} % vs F32)", (p / b - 1.0) * 100.0),
            _ => String::new(),
        };
        println!(
            "QAT of the mix: {} steps; PPL after QAT {}{dppl}",
            a.qat_steps,
            fmt(qat_ppl.or(q.row.ppl)),
        );
        if let Some(s) = &sample {
            println!("greedy sample: {s}");
        }
    }
    Ok(())
}

/// What `--report` writes: the mix (sensitivities, frontier, the measurement of the
/// post-training mix), the QAT of it, and the final file's size and perplexity.
#[derive(serde::Serialize)]
struct MixedOutput<'a> {
    mixed: &'a squish_mixed::MixedReport,
    qat: Option<&'a squish_quant::QuantReport>,
    /// PPL of the written file after QAT (llama-cpp protocol, ctx 256, native runtime).
    qat_ppl: Option<f64>,
    /// The written file's greedy continuation of BOS after QAT.
    greedy_sample: Option<&'a str>,
    file_bytes: u64,
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.4}"))
}
