//! Measures the README table: quantize with each configuration (post-training methods and QAT),
//! write the checkpoint, evaluate perplexity (protocol `llama-cpp`, ctx 256) on TinyStories
//! valid.txt.
//!
//! `target/release/examples/table OUT_DIR [LABEL_FILTER …]` (build with
//! `cargo build --release --workspace --examples`). Environment:
//! - `SQUISH_TABLE_MODEL=ssm`: the SsmMoe baseline (`checkpoints/phase7/baseline/model.safetensors`
//!   and its tokenizer) instead of stories260K;
//! - `CALIB_STORIES` (default 1000): calibration stories;
//! - `QAT_STEPS` (default 400), `QAT_LR` (1e-3), `QAT_SEQ` (128), `QAT_BATCH` (8): the QAT budget.
//!
//! Needs the shared data: stories260K.bin, tok512.bin, tinystories/{train,valid}.txt.

use std::path::PathBuf;

use squish_core::checkpoint::{self, Checkpoint};
use squish_core::config::ModelConfig;
use squish_core::data::{EvalMode, EvalText, calibration_subset, read_stories, story_tokens};
use squish_core::eval::perplexity;
use squish_core::model::CpuBackend;
use squish_core::model::llama::Llama;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};
use squish_quant::{
    AwqConfig, Calibration, GptqConfig, Method, MseConfig, QatConfig, QatData, QatInit, QatScales,
    QuantConfig, QuantFormat, QuantReport, SmallFormat, calibration_windows, qat_checkpoint,
    quantize_checkpoint,
};

fn ppl(ckpt: &Checkpoint, tokens: &[u32], bos: u32) -> f64 {
    let dev = CpuBackend::default().device();
    match &ckpt.config {
        ModelConfig::Llama(c) => {
            let mut m = Llama::from_weights(c, &ckpt.weights, &dev).unwrap();
            perplexity(&mut m, tokens, 256, bos, 8, |_, _| {})
                .unwrap()
                .ppl
        }
        ModelConfig::SsmMoe(c) => {
            let mut m =
                SsmMoe::from_weights(c, &ckpt.weights, &dev, ScanMode::Chunked(16)).unwrap();
            perplexity(&mut m, tokens, 256, bos, 8, |_, _| {})
                .unwrap()
                .ppl
        }
    }
}

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// One row to measure.
enum Run {
    /// Post-training: bits, group, asym, method, AWQ, small.
    Ptq(u32, Option<usize>, bool, Method, bool, SmallFormat),
    /// QAT: bits, group, asym, small, init, scales.
    Qat(u32, Option<usize>, bool, SmallFormat, QatInit, QatScales),
}

fn runs() -> Vec<Run> {
    use Run::{Ptq, Qat};
    use SmallFormat::{F16, F32};
    let gptq = |act_order: bool| {
        Method::Gptq(GptqConfig {
            act_order,
            ..GptqConfig::default()
        })
    };
    let mse = Method::Mse(MseConfig::default());
    let mses = QatScales::default();
    vec![
        Ptq(8, None, false, Method::Rtn, false, F32),
        Ptq(8, None, false, Method::Rtn, false, F16),
        Ptq(8, Some(64), false, Method::Rtn, false, F32),
        Ptq(8, Some(32), true, Method::Rtn, false, F32),
        Ptq(8, None, false, gptq(false), false, F16),
        Ptq(4, Some(32), false, Method::Rtn, false, F32),
        Ptq(4, Some(32), true, Method::Rtn, false, F32),
        Ptq(4, Some(32), false, mse.clone(), false, F32),
        Ptq(4, Some(32), true, mse.clone(), false, F32),
        Ptq(4, Some(32), false, gptq(false), false, F32),
        Ptq(4, Some(32), false, gptq(true), false, F32),
        Ptq(4, Some(32), true, gptq(false), false, F32),
        Ptq(4, Some(32), false, gptq(false), true, F32),
        Ptq(4, Some(32), false, mse.clone(), true, F32),
        Ptq(4, Some(32), false, gptq(false), false, F16),
        Ptq(4, Some(64), false, Method::Rtn, false, F16),
        Ptq(4, Some(64), false, mse.clone(), false, F16),
        Ptq(4, Some(64), false, gptq(false), false, F16),
        Ptq(4, None, false, gptq(false), false, F16),
        Qat(4, Some(64), false, F16, QatInit::Mse, mses.clone()),
        Qat(4, Some(64), false, F16, QatInit::F32, mses.clone()),
        Qat(4, Some(64), false, F16, QatInit::Gptq, mses.clone()),
        Qat(4, Some(64), false, F16, QatInit::Mse, QatScales::MinMax),
        Qat(4, None, false, F16, QatInit::Mse, mses.clone()),
        Qat(8, None, false, F16, QatInit::Rtn, QatScales::MinMax),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ssm = std::env::var("SQUISH_TABLE_MODEL").is_ok_and(|m| m == "ssm");
    let out_dir = PathBuf::from(args.first().cloned().unwrap_or_else(|| {
        if ssm {
            "checkpoints/phase7/quant_table".into()
        } else {
            "checkpoints/stories260k/quant".into()
        }
    }));
    let filters = &args[1.min(args.len())..];
    let shared = PathBuf::from("/work/shared/data");
    let (f32_ckpt, tok) = if ssm {
        let p = PathBuf::from("checkpoints/phase7/baseline/model.safetensors");
        let mut c = checkpoint::load(&p).unwrap();
        let tok = checkpoint::load_tokenizer(&p, &c).unwrap();
        c.tokenizer = None;
        (c, tok)
    } else {
        let (cfg, weights) =
            squish_core::llama2c::import(&shared.join("models/stories260K/stories260K.bin"))
                .unwrap();
        let tok = Llama2cTokenizer::from_file(
            shared.join("models/stories260K/tok512.bin"),
            cfg.vocab_size,
        )
        .unwrap();
        let c = Checkpoint {
            config: ModelConfig::Llama(cfg),
            weights,
            provenance: Default::default(),
            metrics: Default::default(),
            tokenizer: None,
        };
        (c, tok)
    };
    let valid = EvalText::load(
        &shared.join("tinystories/valid.txt"),
        EvalMode::Stories,
        None,
    )
    .unwrap()
    .tokens(&tok);
    let stories = read_stories(&shared.join("tinystories/train.txt")).unwrap();
    let train = story_tokens(&tok, &stories);
    let n_calib = env("CALIB_STORIES", 1000usize);
    let windows = calibration_windows(&tok, &calibration_subset(&stories, n_calib, 0), 256);
    let t0 = std::time::Instant::now();
    let cal = Calibration::collect(&f32_ckpt, &windows, &CpuBackend::default().device()).unwrap();
    eprintln!(
        "calibration: {} windows, {} tokens, {:.1} s",
        cal.windows,
        cal.tokens,
        t0.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(&out_dir).unwrap();
    let f32_path = out_dir.join("f32.safetensors");
    checkpoint::save(&f32_ckpt, &f32_path).unwrap();
    let params = f32_ckpt.weights.param_count();
    let base = ppl(&f32_ckpt, &valid, tok.bos_id());
    let f32_bytes = std::fs::metadata(&f32_path).unwrap().len();
    println!(
        "| method | bits | group | sym/asym | small | file bytes | bits/param | PPL | ΔPPL | mean out err |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| f32 | 32 | - | - | f32 | {f32_bytes} | {:.3} | {base:.4} | - | - |",
        f32_bytes as f64 * 8.0 / params as f64
    );
    let (steps, lr, seq, batch) = (
        env("QAT_STEPS", 400usize),
        env("QAT_LR", 1e-3f64),
        env("QAT_SEQ", 128usize),
        env("QAT_BATCH", 8usize),
    );
    for run in runs() {
        let (bits, group, asym, small) = match &run {
            Run::Ptq(b, g, a, _, _, s) | Run::Qat(b, g, a, s, _, _) => (*b, *g, *a, *s),
        };
        let format = QuantFormat::new(bits, group, asym).unwrap();
        let small_s = format!("{small:?}").to_lowercase();
        let (label, name) = match &run {
            Run::Ptq(_, _, _, method, awq, _) => {
                let act = matches!(method, Method::Gptq(g) if g.act_order);
                (
                    format!(
                        "{}{}{}-{}-{small_s}",
                        format.label(),
                        if act { "-act" } else { "" },
                        if *awq { "-awq" } else { "" },
                        method.name()
                    ),
                    format!(
                        "{}{}",
                        method.name(),
                        if act {
                            "-act"
                        } else if *awq {
                            "+awq"
                        } else {
                            ""
                        }
                    ),
                )
            }
            Run::Qat(_, _, _, _, init, scales) => {
                let sc = match scales {
                    QatScales::MinMax => "minmax",
                    QatScales::Mse(_) => "mse",
                    QatScales::Learned(_) => "learned",
                };
                let init = format!("{init:?}").to_lowercase();
                (
                    format!("{}-qat-{init}-{sc}-{steps}-{small_s}", format.label()),
                    format!("qat ({init} init, {sc} scales, {steps} steps)"),
                )
            }
        };
        if !filters.is_empty() && !filters.iter().any(|f| label.contains(f.as_str())) {
            continue;
        }
        let t = std::time::Instant::now();
        let (q, mut report): (Checkpoint, QuantReport) = match run {
            Run::Ptq(_, _, _, method, awq, _) => {
                let mut qc = QuantConfig::new(format, method);
                qc.awq = awq.then(AwqConfig::default);
                qc.small = small;
                quantize_checkpoint(&f32_ckpt, &qc, Some(&cal)).unwrap()
            }
            Run::Qat(_, _, _, _, init, scales) => {
                let mut qc = QatConfig::default();
                qc.quant.format = format;
                qc.quant.small = small;
                qc.init = init;
                qc.scales = scales;
                qc.train.steps = steps;
                qc.train.lr = lr;
                qc.train.min_lr = lr / 10.0;
                qc.train.warmup_steps = 10.min(steps / 10);
                qc.train.seq_len = seq;
                qc.train.batch_size = batch;
                let data = QatData {
                    train: &train,
                    valid: &valid,
                    bos: tok.bos_id(),
                    teacher: None,
                };
                qat_checkpoint(&f32_ckpt, &qc, &data, Some(&cal), &mut |p| {
                    if p.step % 50 == 0 {
                        eprintln!("{label}: step {} loss {:.4}", p.step, p.loss);
                    }
                })
                .unwrap()
            }
        };
        let secs = t.elapsed().as_secs_f64();
        let path = out_dir.join(format!("{label}.safetensors"));
        checkpoint::save(&q, &path).unwrap();
        let p = ppl(&checkpoint::load(&path).unwrap(), &valid, tok.bos_id());
        report.finish_row(std::fs::metadata(&path).unwrap().len(), Some(p), Some(base));
        let r = &report.row;
        println!(
            "| {name} | {bits} | {} | {} | {small_s} | {} | {:.3} | {p:.4} | {:+.2} % | {:.4} |",
            group.map_or("row".into(), |g| g.to_string()),
            if asym { "asym" } else { "sym" },
            r.file_bytes.unwrap(),
            r.bits_per_param.unwrap(),
            r.delta_ppl_pct.unwrap(),
            report.mean_output_error().unwrap_or(f64::NAN)
        );
        eprintln!(
            "{label}: {secs:.1} s, kept share {:.2} %",
            100.0 * report.kept_share
        );
        std::fs::write(
            out_dir.join(format!("{label}.report.json")),
            serde_json::to_string_pretty(&report).unwrap(),
        )
        .unwrap();
    }
}
