//! Measures the README table for stories260K: quantize with each configuration, write the
//! checkpoint, evaluate perplexity (protocol `llama-cpp`, ctx 256) on TinyStories valid.txt.
//!
//! `cargo run --release -p squish-quant --example table -- OUT_DIR [LABEL_FILTER …]`
//! (needs the shared data: stories260K.bin, tok512.bin, tinystories/{train,valid}.txt).

use std::path::PathBuf;

use squish_core::checkpoint::{self, Checkpoint};
use squish_core::config::ModelConfig;
use squish_core::data::{calibration_subset, read_stories, read_text};
use squish_core::eval::perplexity;
use squish_core::model::CpuBackend;
use squish_core::model::llama::Llama;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};
use squish_quant::{
    AwqConfig, Calibration, GptqConfig, Method, MseConfig, QuantConfig, QuantFormat, SmallFormat,
    calibration_windows, quantize_checkpoint,
};

fn ppl(ckpt: &Checkpoint, tokens: &[u32], bos: u32) -> f64 {
    let ModelConfig::Llama(c) = &ckpt.config else {
        panic!("stories260K is a Llama")
    };
    let mut m = Llama::from_weights(c, &ckpt.weights, &CpuBackend::default().device()).unwrap();
    perplexity(&mut m, tokens, 256, bos, 8, |_, _| {})
        .unwrap()
        .ppl
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out_dir = PathBuf::from(
        args.first()
            .cloned()
            .unwrap_or_else(|| "checkpoints/stories260k/quant".into()),
    );
    let filters = &args[1.min(args.len())..];
    let shared = PathBuf::from("/work/shared/data");
    let (cfg, weights) =
        squish_core::llama2c::import(&shared.join("models/stories260K/stories260K.bin")).unwrap();
    let tok =
        Llama2cTokenizer::from_file(shared.join("models/stories260K/tok512.bin"), cfg.vocab_size)
            .unwrap();
    let f32_ckpt = Checkpoint {
        config: ModelConfig::Llama(cfg),
        weights,
        provenance: Default::default(),
        metrics: Default::default(),
        tokenizer: None,
    };
    let valid = tok.encode(
        &read_text(&shared.join("tinystories/valid.txt")).unwrap(),
        true,
        false,
    );
    let stories = read_stories(&shared.join("tinystories/train.txt")).unwrap();
    let windows = calibration_windows(&tok, &calibration_subset(&stories, 1000, 0), 256);
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
    let gptq = |act_order: bool| {
        Method::Gptq(GptqConfig {
            act_order,
            ..GptqConfig::default()
        })
    };
    let mse = Method::Mse(MseConfig::default());
    let runs: Vec<(u32, Option<usize>, bool, Method, bool, SmallFormat)> = vec![
        (8, None, false, Method::Rtn, false, SmallFormat::F32),
        (8, Some(64), false, Method::Rtn, false, SmallFormat::F32),
        (8, Some(32), true, Method::Rtn, false, SmallFormat::F32),
        (8, None, false, gptq(false), false, SmallFormat::F16),
        (4, Some(32), false, Method::Rtn, false, SmallFormat::F32),
        (4, Some(32), true, Method::Rtn, false, SmallFormat::F32),
        (4, Some(32), false, mse.clone(), false, SmallFormat::F32),
        (4, Some(32), true, mse.clone(), false, SmallFormat::F32),
        (4, Some(32), false, gptq(false), false, SmallFormat::F32),
        (4, Some(32), false, gptq(true), false, SmallFormat::F32),
        (4, Some(32), true, gptq(false), false, SmallFormat::F32),
        (4, Some(32), false, gptq(false), true, SmallFormat::F32),
        (4, Some(32), false, mse.clone(), true, SmallFormat::F32),
        (4, Some(32), false, gptq(false), false, SmallFormat::F16),
        (4, Some(64), false, Method::Rtn, false, SmallFormat::F16),
        (4, Some(64), false, mse.clone(), false, SmallFormat::F16),
        (4, Some(64), false, gptq(false), false, SmallFormat::F16),
        (4, Some(64), false, gptq(false), true, SmallFormat::F16),
        (4, Some(16), false, gptq(false), false, SmallFormat::F32),
        (4, None, false, gptq(false), false, SmallFormat::F16),
    ];
    for (bits, group, asym, method, awq, small) in runs {
        let mut qc = QuantConfig::new(QuantFormat::new(bits, group, asym).unwrap(), method.clone());
        qc.awq = awq.then(AwqConfig::default);
        qc.small = small;
        let act = matches!(&method, Method::Gptq(g) if g.act_order);
        let label = format!(
            "{}{}{}-{}-{:?}",
            qc.format.label(),
            if act { "-act" } else { "" },
            if awq { "-awq" } else { "" },
            method.name(),
            small
        )
        .to_lowercase();
        if !filters.is_empty() && !filters.iter().any(|f| label.contains(f.as_str())) {
            continue;
        }
        let t = std::time::Instant::now();
        let (q, mut report) = quantize_checkpoint(&f32_ckpt, &qc, Some(&cal)).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let path = out_dir.join(format!("{label}.safetensors"));
        checkpoint::save(&q, &path).unwrap();
        let p = ppl(&q, &valid, tok.bos_id());
        report.finish_row(std::fs::metadata(&path).unwrap().len(), Some(p), Some(base));
        let m = if act {
            "gptq-act".to_string()
        } else {
            report.method.clone()
        };
        let r = &report.row;
        println!(
            "| {m} | {bits} | {} | {} | {} | {} | {:.3} | {p:.4} | {:+.2} % | {:.4} |",
            group.map_or("row".into(), |g| g.to_string()),
            if asym { "asym" } else { "sym" },
            format!("{small:?}").to_lowercase(),
            r.file_bytes.unwrap(),
            r.bits_per_param.unwrap(),
            r.delta_ppl_pct.unwrap(),
            report.mean_output_error().unwrap_or(f64::NAN)
        );
        eprintln!(
            "{label}: quantized in {secs:.1} s, kept share {:.2} %",
            100.0 * report.kept_share
        );
        std::fs::write(
            out_dir.join(format!("{label}.report.json")),
            serde_json::to_string_pretty(&report).unwrap(),
        )
        .unwrap();
    }
}
