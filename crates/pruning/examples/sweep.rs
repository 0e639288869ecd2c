//! Measurement driver for the pruning stage on a real checkpoint.
//!
//! ```text
//! target/release/examples/sweep --ckpt checkpoints/phase7/baseline/model.safetensors \
//!     --config '{"targets":["moe_channels","experts"]}' --ratios 0.2,0.4 \
//!     --importances wanda,taylor --steps 200 --eval-chunks 150 [--full-eval] [--save out.safetensors]
//! ```
//!
//! Data: `$SQUISH_DATA` or `../shared/data/tinystories/{train,valid}.txt`, tokenized with the
//! tokenizer beside the checkpoint. Validation uses the llama-cpp protocol (ctx 256) on
//! `--eval-chunks` chunks spread evenly over valid.txt (all 1492 chunks with `--full-eval`, for
//! the final model only). One JSON line per run is printed and appended to `--out`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use squish_core::checkpoint;
use squish_core::data::{EvalMode, EvalText, Rng, read_stories, story_tokens};
use squish_core::eval::{LogitsModel, perplexity};
use squish_core::model::CpuBackend;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};
use squish_core::train::TrainConfig;
use squish_core::{Error, Result};
use squish_prune::net::Net;
use squish_prune::{Importance, PruneConfig, PruneData, PruneEvent, PruneInput, run};

struct Args {
    ckpt: PathBuf,
    config: String,
    ratios: Vec<f32>,
    importances: Vec<Importance>,
    steps: usize,
    lr: f64,
    eval_chunks: usize,
    full_eval: bool,
    save: Option<PathBuf>,
    out: PathBuf,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        ckpt: "checkpoints/phase7/baseline/model.safetensors".into(),
        config: "{}".into(),
        ratios: vec![0.4],
        importances: vec![Importance::Wanda],
        steps: 200,
        lr: 2e-3,
        eval_chunks: 150,
        full_eval: false,
        save: None,
        out: "crates/pruning/results/sweep.jsonl".into(),
    };
    let mut it = std::env::args().skip(1);
    let bad = |m: String| Error::invalid(m);
    while let Some(k) = it.next() {
        if k == "--full-eval" {
            a.full_eval = true;
            continue;
        }
        let v = it.next().ok_or_else(|| bad(format!("{k} needs a value")))?;
        let num = |s: &str| s.parse::<f64>().map_err(|e| bad(format!("{k} {s}: {e}")));
        match k.as_str() {
            "--ckpt" => a.ckpt = v.into(),
            "--config" => a.config = v,
            "--ratios" => {
                a.ratios = v
                    .split(',')
                    .map(|s| num(s).map(|x| x as f32))
                    .collect::<Result<_>>()?
            }
            "--importances" => {
                a.importances = v
                    .split(',')
                    .map(|s| {
                        serde_json::from_str(&format!("\"{s}\""))
                            .map_err(|e| bad(format!("importance {s}: {e}")))
                    })
                    .collect::<Result<_>>()?
            }
            "--steps" => a.steps = num(&v)? as usize,
            "--lr" => a.lr = num(&v)?,
            "--eval-chunks" => a.eval_chunks = num(&v)? as usize,
            "--save" => a.save = Some(v.into()),
            "--out" => a.out = v.into(),
            other => return Err(bad(format!("unknown option {other}"))),
        }
    }
    Ok(a)
}

fn data_dir() -> PathBuf {
    std::env::var("SQUISH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/work/shared/data/tinystories"))
}

/// Training stories (each BOS-first) of `train.txt`.
fn train_tokens(tok: &Llama2cTokenizer, path: &Path) -> Result<Vec<u32>> {
    Ok(story_tokens(tok, &read_stories(path)?))
}

/// The evaluation text (stories joined by blank lines) of `valid.txt`, tokenized.
fn valid_tokens(tok: &Llama2cTokenizer, path: &Path) -> Result<Vec<u32>> {
    Ok(EvalText::load(path, EvalMode::Stories, None)?.tokens(tok))
}

fn full_ppl(ck: &checkpoint::Checkpoint, valid: &[u32], bos: u32) -> Result<f64> {
    let device = CpuBackend::from_env()?.device();
    let net = Net::build(&ck.config, &ck.weights, &device)?;
    struct L<'a>(&'a Net, usize);
    impl LogitsModel for L<'_> {
        fn vocab_size(&self) -> usize {
            self.1
        }
        fn logits(&mut self, b: &[Vec<u32>]) -> Result<Vec<f32>> {
            squish_core::model::tensor_to_vec(self.0.logits(b)?)
        }
    }
    let mut m = L(&net, ck.config.vocab_size());
    Ok(perplexity(&mut m, valid, 256, bos, 8, |_, _| {})?.ppl)
}

fn main() -> Result<()> {
    let a = parse()?;
    let ck = checkpoint::load(&a.ckpt)?;
    let tref = ck
        .tokenizer
        .clone()
        .ok_or_else(|| Error::invalid("checkpoint names no tokenizer"))?;
    let tpath = a.ckpt.parent().unwrap_or(Path::new(".")).join(&tref.file);
    let tok = Llama2cTokenizer::from_file(&tpath, ck.config.vocab_size())?;
    let t0 = Instant::now();
    let train = train_tokens(&tok, &data_dir().join("train.txt"))?;
    let valid = valid_tokens(&tok, &data_dir().join("valid.txt"))?;
    let bos = tok.bos_id();
    eprintln!(
        "tokenized train {} / valid {} tokens in {:.1}s",
        train.len(),
        valid.len(),
        t0.elapsed().as_secs_f64()
    );
    let mut rng = Rng::new(99);
    let calib: Vec<Vec<u32>> = (0..32)
        .map(|_| {
            let s = rng.below(train.len() - 130);
            let mut w = train[s..s + 129].to_vec();
            w[0] = bos;
            w
        })
        .collect();
    let data = PruneData {
        calib: &calib,
        train: &train,
        valid: &valid,
        bos,
    };
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    for &ratio in &a.ratios {
        for &importance in &a.importances {
            let mut cfg: PruneConfig = serde_json::from_str(&a.config)
                .map_err(|e| Error::invalid(format!("--config: {e}")))?;
            cfg.ratio = ratio;
            cfg.importance = importance;
            cfg.eval_ctx = 256;
            cfg.eval_chunks = a.eval_chunks;
            cfg.recover = (a.steps > 0).then(|| TrainConfig {
                steps: a.steps,
                batch_size: 16,
                seq_len: 128,
                lr: a.lr,
                min_lr: a.lr / 10.0,
                warmup_steps: 10,
                weight_decay: 0.0,
                grad_clip: 1.0,
                balance_coef: 0.01,
                distill_alpha: 0.7,
                distill_temperature: 1.0,
                eval_every: 0,
                eval_chunks: 4,
                seed: 1,
                adam_epsilon: squish_core::train::DEFAULT_ADAM_EPSILON,
                micro_batches: squish_core::train::DEFAULT_MICRO_BATCHES,
            });
            let t = Instant::now();
            let input = PruneInput { ckpt: &ck, data };
            let stage = run(&input, &cfg, &mut |e| match e {
                PruneEvent::Train { point, .. } if point.step % 50 == 0 => {
                    eprintln!("  step {} loss {:.4}", point.step, point.loss)
                }
                PruneEvent::Train { .. } => {}
                other => eprintln!("  {other:?}"),
            })?;
            let (out, rep) = (stage.checkpoint, stage.report);
            let secs = t.elapsed().as_secs_f64();
            let last = rep.rounds.last();
            let ppl = |n: Option<f64>| n.map(f64::exp);
            let full = if a.full_eval {
                Some(full_ppl(&out, &valid, bos)?)
            } else {
                None
            };
            let line = serde_json::json!({
                "ckpt": a.ckpt, "config": cfg, "ratio": ratio, "importance": importance,
                "params_before": rep.params_before, "params_after": rep.params_after,
                "non_embedding_after": rep.non_embedding_after,
                "achieved_ratio": rep.achieved_ratio,
                "ppl_unpruned_subset": ppl(rep.valid_nats_unpruned),
                "ppl_before_recovery_subset": ppl(rep.rounds.first().and_then(|r| r.valid_nats_before_recovery)),
                "ppl_after_recovery_subset": ppl(last.and_then(|r| r.valid_nats_after_recovery)),
                "ppl_full_valid": full,
                "eval_chunks": a.eval_chunks, "recovery_steps_per_round": a.steps,
                "rounds": rep.rounds.len(), "widths_after": rep.widths_after, "seconds": secs,
            });
            println!("{line}");
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&a.out)
                .map_err(|e| Error::io("opening", &a.out, e))?;
            writeln!(f, "{line}").map_err(|e| Error::io("writing", &a.out, e))?;
            if let Some(p) = &a.save {
                checkpoint::save(&out, p)?;
            }
        }
    }
    Ok(())
}
