//! Measures mixed precision on a real checkpoint for several budgets (the README tables).
//!
//! ```text
//! cargo build --release --workspace --examples
//! target/release/examples/measure CHECKPOINT OUT_DIR [BUDGET …] [--objective dnats|kl]
//!     [--windows N] [--threads N] [--no-frontier]
//! ```
//! BUDGET: `bytes:N`, `bpp:B`, `dppl:P` (default: `bytes:174376 bpp:3.5 dppl:3`). The frontier
//! (with uniform INT4/INT8 points) is measured for the first budget only. Calibration: 1,000
//! TinyStories train stories (seed 0) in 256-token windows; PPL: valid.txt, llama-cpp, ctx 256.

use std::path::{Path, PathBuf};

use squish_core::checkpoint;
use squish_core::data::{EvalMode, EvalText, calibration_subset, read_stories};
use squish_core::model::CpuBackend;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};
use squish_mixed::{Budget, MixedConfig, MixedData, MixedEvent, Objective, frontier_svg};
use squish_quant::{Calibration, calibration_windows};

fn parse_budget(s: &str) -> Budget {
    let (k, v) = s.split_once(':').expect("budget is kind:value");
    match k {
        "bytes" => Budget::Bytes(v.parse().expect("bytes")),
        "bpp" => Budget::BitsPerParam(v.parse().expect("bpp")),
        "dppl" => Budget::MaxDppl(v.parse().expect("dppl")),
        _ => panic!("unknown budget kind {k}"),
    }
}

/// Calibration statistics as little-endian binary (collecting them takes ~2 min on 2 cores).
fn write_stats(path: &Path, c: &Calibration) -> std::io::Result<()> {
    let mut b = Vec::new();
    let put = |b: &mut Vec<u8>, v: u64| b.extend(v.to_le_bytes());
    put(&mut b, c.windows as u64);
    put(&mut b, c.tokens as u64);
    put(&mut b, c.tensors.len() as u64);
    for (name, s) in &c.tensors {
        put(&mut b, name.len() as u64);
        b.extend(name.as_bytes());
        put(&mut b, s.cols as u64);
        put(&mut b, s.n);
        s.xtx.iter().for_each(|x| b.extend(x.to_le_bytes()));
        s.abs_sum.iter().for_each(|x| b.extend(x.to_le_bytes()));
    }
    std::fs::write(path, b)
}

struct Reader {
    b: Vec<u8>,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.b.get(self.at..self.at + n)?;
        self.at += n;
        Some(s)
    }
    fn u(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn read_stats(path: &Path) -> Option<Calibration> {
    let mut r = Reader {
        b: std::fs::read(path).ok()?,
        at: 0,
    };
    let (windows, tokens, n) = (r.u()? as usize, r.u()? as usize, r.u()?);
    let mut c = Calibration {
        windows,
        tokens,
        ..Default::default()
    };
    for _ in 0..n {
        let len = r.u()? as usize;
        let name = String::from_utf8(r.take(len)?.to_vec()).ok()?;
        let cols = r.u()? as usize;
        let mut s = squish_quant::TensorStats::new(cols);
        s.n = r.u()?;
        for x in s.xtx.iter_mut().chain(s.abs_sum.iter_mut()) {
            *x = f64::from_bits(r.u()?);
        }
        c.tensors.insert(name, s);
    }
    Some(c)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ckpt_path = PathBuf::from(&args[0]);
    let out_dir = PathBuf::from(&args[1]);
    let (mut budgets, mut objective, mut windows_n, mut threads, mut frontier) =
        (Vec::new(), Objective::Kl, 32, 2, true);
    let mut i = 2;
    while i < args.len() {
        match args[i].as_str() {
            "--objective" => {
                objective = match args[i + 1].as_str() {
                    "dnats" => Objective::DeltaNats,
                    _ => Objective::Kl,
                };
                i += 1;
            }
            "--windows" => {
                windows_n = args[i + 1].parse()?;
                i += 1;
            }
            "--threads" => {
                threads = args[i + 1].parse()?;
                i += 1;
            }
            "--no-frontier" => frontier = false,
            b => budgets.push(parse_budget(b)),
        }
        i += 1;
    }
    if budgets.is_empty() {
        budgets = ["bytes:174376", "bpp:3.5", "dppl:3"]
            .map(parse_budget)
            .to_vec();
    }
    let ckpt = checkpoint::load(&ckpt_path)?;
    let tref = ckpt
        .tokenizer
        .clone()
        .ok_or("checkpoint names no tokenizer")?;
    let tok = Llama2cTokenizer::from_file(
        ckpt_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&tref.file),
        ckpt.config.vocab_size(),
    )?;
    let data_dir = PathBuf::from("/work/shared/data/tinystories");
    let valid = EvalText::load(&data_dir.join("valid.txt"), EvalMode::Stories, None)?.tokens(&tok);
    let stories = read_stories(&data_dir.join("train.txt"))?;
    let windows = calibration_windows(&tok, &calibration_subset(&stories, 1000, 0), 256);
    let t0 = std::time::Instant::now();
    let sha = squish_core::fsutil::sha256_file(&ckpt_path)?;
    let stats_path = out_dir.join(format!("stats-{}.bin", &sha[..16]));
    let stats = match read_stats(&stats_path) {
        Some(s) => s,
        None => {
            let s = Calibration::collect(&ckpt, &windows, &CpuBackend::default().device())?;
            std::fs::create_dir_all(&out_dir)?;
            write_stats(&stats_path, &s)?;
            s
        }
    };
    eprintln!(
        "calibration statistics: {} windows, {} tokens, {:.1} s",
        stats.windows,
        stats.tokens,
        t0.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(&out_dir)?;
    let data = MixedData {
        calib: &windows,
        valid: &valid,
        bos: tok.bos_id(),
    };
    for (bi, budget) in budgets.iter().enumerate() {
        let cfg = MixedConfig {
            budget: *budget,
            calib_windows: windows_n,
            cache_dir: Some(out_dir.join("cache")),
            objective,
            threads,
            measure_frontier: frontier && bi == 0,
            frontier_points: if frontier && bi == 0 { 8 } else { 0 },
            ..MixedConfig::default()
        };
        let t = std::time::Instant::now();
        let mut on_event = |e: &MixedEvent| match e {
            MixedEvent::Sensitivity { done, total, .. } if done % 50 == 0 || done == total => {
                eprintln!(
                    "  sensitivity {done}/{total} ({:.0} s)",
                    t.elapsed().as_secs_f64()
                )
            }
            MixedEvent::Sensitivity { .. } => {}
            other => eprintln!("  {other:?}"),
        };
        let tag = budget
            .label()
            .replace([' ', '/'], "_")
            .replace(['≤', 'Δ', '%'], "");
        match squish_mixed::mixed_checkpoint(&ckpt, &cfg, &data, Some(&stats), &mut on_event) {
            Ok((mut out, report)) => {
                out.tokenizer = ckpt.tokenizer.clone();
                let path = out_dir.join(format!("mixed-{tag}.safetensors"));
                checkpoint::save(&out, &path)?;
                std::fs::copy(
                    ckpt_path
                        .parent()
                        .unwrap_or(Path::new("."))
                        .join(&tref.file),
                    out_dir.join(&tref.file),
                )?;
                squish_core::fsutil::atomic_write(
                    &out_dir.join(format!("report-{tag}.json")),
                    serde_json::to_string_pretty(&report)?.as_bytes(),
                )?;
                if !report.frontier.is_empty() {
                    std::fs::write(
                        out_dir.join(format!("frontier-{tag}.svg")),
                        frontier_svg(&report),
                    )?;
                }
                let disk = std::fs::metadata(&path)?.len();
                println!(
                    "{} | file {} B (disk {disk}) | {:.3} bpp | predicted PPL {:.4} | measured PPL {:.4} ({:+.2} %) | pred err {:+.2} % | calib Δnats pred {:.5} meas {:.5} | α {:?} | {:?} | {:.0} s",
                    budget.label(),
                    report.file_bytes,
                    report.bits_per_param,
                    report.predicted_ppl.unwrap_or(f64::NAN),
                    report.measured_ppl.unwrap_or(f64::NAN),
                    report.measured_dppl_pct.unwrap_or(f64::NAN),
                    report.prediction_error_pct.unwrap_or(f64::NAN),
                    report.predicted_dnats,
                    report.measured_calib_dnats,
                    report.correction,
                    report.format_counts(),
                    t.elapsed().as_secs_f64()
                );
                println!(
                    "  proxy spearman: vs KL {:.3}, vs Δnats {:.3}; KL vs Δnats {:.3} ({} pairs)",
                    report.proxy.spearman_kl,
                    report.proxy.spearman_dnats,
                    report.proxy.spearman_kl_dnats,
                    report.proxy.pairs
                );
                for p in &report.frontier {
                    println!(
                        "  {:<22} {:>8} B {:>7.3} bpp  pred {:>8.4}  corr {:>8.4}  meas {:>8.4}  calibΔ pred {:.5} meas {:.5}",
                        p.label,
                        p.file_bytes,
                        p.bits_per_param,
                        p.predicted_ppl.unwrap_or(f64::NAN),
                        p.corrected_ppl.unwrap_or(f64::NAN),
                        p.measured_ppl.unwrap_or(f64::NAN),
                        p.predicted_dnats,
                        p.measured_calib_dnats.unwrap_or(f64::NAN)
                    );
                }
            }
            Err(e) => println!("{} | error: {e}", budget.label()),
        }
    }
    Ok(())
}
