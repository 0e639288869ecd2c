//! `cargo xtask prune-frontier`: the pruning frontier of an F32 checkpoint — parameters vs PPL
//! for width (`d_model`), depth (one block, then channels) and MoE/SSM-channel pruning at equal
//! recovery tokens, and PPL vs recovery tokens at one ratio — written as a Markdown table and two
//! SVG plots. Every point is one `prune` run ([`crate::cmd_prune::prune_once`], squish-prune's
//! stage); a point whose summary exists in the output directory is read back, so an interrupted
//! sweep resumes where it stopped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cmd_prune::{PruneArgs, prune_once};
use crate::svg::{Series, human_count, plot_with};

/// Arguments of `prune-frontier`.
#[derive(clap::Args, Debug, Clone)]
pub struct FrontierArgs {
    /// F32 SsmMoe checkpoint to prune.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Directory for the pruned checkpoints, the per-point summaries and the report.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Fractions of the non-embedding parameters to remove (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0.55,0.76,0.85,0.935")]
    pub ratios: Vec<f32>,
    /// Methods (comma-separated): channels (MoE channels + experts + SSM channels), depth (one
    /// block, then channels), width (`d_model`, activation importance).
    #[arg(long, value_delimiter = ',', default_value = "channels,depth,width")]
    pub methods: Vec<String>,
    /// Recovery tokens per round for the parameters-vs-PPL sweep.
    #[arg(long, default_value_t = 1_024_000)]
    pub recover_tokens: usize,
    /// Recovery token budgets of the tokens-vs-PPL curve besides the sweep's own (comma-separated;
    /// the flag alone = no curve).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "256000,512000,2048000")]
    pub token_curve: Vec<usize>,
    /// Ratio and method of the tokens-vs-PPL curve.
    #[arg(long, default_value_t = 0.76)]
    pub curve_ratio: f32,
    /// Method of the tokens-vs-PPL curve.
    #[arg(long, default_value = "channels")]
    pub curve_method: String,
    /// Recovery batch size.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Recovery window length.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Recovery peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Weight of the distillation KL in the recovery loss.
    #[arg(long, default_value_t = 0.7)]
    pub distill_alpha: f32,
    /// Directory with train.txt/valid.txt (else $SQUISH_DATA, else ../shared/data/tinystories).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// One measured point.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Point {
    method: String,
    ratio: f32,
    recover_tokens: usize,
    params: usize,
    file_bytes: u64,
    ppl: f64,
    seconds: f64,
}

/// The `prune` arguments of `method` at `ratio` with `tokens` recovery tokens per round.
fn prune_args(
    a: &FrontierArgs,
    method: &str,
    ratio: f32,
    tokens: usize,
    dir: &Path,
) -> Result<PruneArgs> {
    let (targets, importance, remove_blocks) = match method {
        "channels" => ("moe_channels,experts,ssm_channels", "wanda", 0),
        "depth" => ("moe_channels,experts,ssm_channels", "wanda", 1),
        "width" => ("d_model", "activation", 0),
        other => bail!("--methods: unknown method `{other}` (channels, depth, width)"),
    };
    Ok(PruneArgs {
        checkpoint: a.checkpoint.clone(),
        out: dir.join("model.safetensors"),
        ratio,
        importance: importance.into(),
        targets: Some(targets.into()),
        allow_ssm: true,
        allocation: "global".into(),
        rounds: 1,
        min_width: 8,
        round_to: 0,
        recover_tokens: tokens,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        no_rescale_norms: false,
        remove_blocks,
        lr: a.lr,
        distill_alpha: a.distill_alpha,
        data_dir: a.data_dir.clone(),
        seed: 0,
        report: Some(dir.join("report.json")),
    })
}

/// The point of `method` at `ratio` and `tokens`: read back if measured, else pruned now.
fn point(a: &FrontierArgs, method: &str, ratio: f32, tokens: usize) -> Result<Point> {
    let dir = a.out_dir.join(format!("{method}_r{:.3}_t{tokens}", ratio));
    let summary = dir.join("point.json");
    if let Ok(bytes) = std::fs::read(&summary) {
        return serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", summary.display()));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("prune-frontier: {method} at ratio {ratio}, {tokens} recovery tokens");
    let (report, m) = prune_once(&prune_args(a, method, ratio, tokens, &dir)?)?;
    let p = Point {
        method: method.into(),
        ratio,
        recover_tokens: tokens,
        params: report.params_after,
        file_bytes: m.file_bytes,
        ppl: m.ppl.ppl,
        seconds: report.seconds,
    };
    squish_core::fsutil::atomic_write(&summary, serde_json::to_string_pretty(&p)?.as_bytes())?;
    Ok(p)
}

/// Entry point of `prune-frontier`.
pub fn run(a: &FrontierArgs) -> Result<()> {
    if a.ratios.is_empty() || a.methods.is_empty() {
        bail!("--ratios and --methods must name at least one value each");
    }
    for m in a.methods.iter().chain([&a.curve_method]) {
        prune_args(a, m, 0.5, 0, &a.out_dir)?;
    }
    if let Some(r) = a
        .ratios
        .iter()
        .chain([&a.curve_ratio])
        .find(|r| !(**r > 0.0 && **r < 1.0))
    {
        bail!("--ratios / --curve-ratio: ratio {r} must be in (0, 1)");
    }
    let mut sweep = Vec::new();
    for method in &a.methods {
        for &ratio in &a.ratios {
            sweep.push(point(a, method, ratio, a.recover_tokens)?);
        }
    }
    let mut curve = Vec::new();
    for &tokens in &a.token_curve {
        curve.push(point(a, &a.curve_method, a.curve_ratio, tokens)?);
    }
    if let Some(p) = sweep
        .iter()
        .find(|p| p.method == a.curve_method && p.ratio == a.curve_ratio)
    {
        curve.push(p.clone());
    }
    curve.sort_by_key(|p| p.recover_tokens);
    curve.dedup_by_key(|p| p.recover_tokens);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let by_method: Vec<Series> = a
        .methods
        .iter()
        .zip(colors.iter().cycle())
        .map(|(m, c)| Series {
            name: m.clone(),
            color: (*c).into(),
            points: sweep
                .iter()
                .filter(|p| &p.method == m)
                .map(|p| (p.params as f64, p.ppl, format!("{:.2}", p.ppl)))
                .collect(),
            line: true,
        })
        .collect();
    let title = format!("Pruning frontier at {} recovery tokens", a.recover_tokens);
    let svg1 = plot_with(&title, "parameters", "PPL", &by_method, None, human_count);
    let svg2 = plot_with(
        &format!(
            "PPL vs recovery tokens ({} at ratio {})",
            a.curve_method, a.curve_ratio
        ),
        "recovery tokens",
        "PPL",
        &[Series {
            name: a.curve_method.clone(),
            color: colors[0].into(),
            points: curve
                .iter()
                .map(|p| (p.recover_tokens as f64, p.ppl, format!("{:.2}", p.ppl)))
                .collect(),
            line: true,
        }],
        None,
        human_count,
    );
    let write = |name: &str, text: &str| -> Result<()> {
        squish_core::fsutil::atomic_write(&a.out_dir.join(name), text.as_bytes())
            .with_context(|| format!("writing {name}"))
    };
    write("frontier.svg", &svg1)?;
    write("frontier_tokens.svg", &svg2)?;
    write("frontier.md", &markdown(a, &sweep, &curve))?;
    println!(
        "wrote {}: {} points",
        a.out_dir.join("frontier.md").display(),
        sweep.len() + curve.len()
    );
    Ok(())
}

/// The report: how it was made, the sweep, the token curve.
fn markdown(a: &FrontierArgs, sweep: &[Point], curve: &[Point]) -> String {
    let mut s = format!(
        "# Pruning frontier\n\n`cargo xtask prune-frontier --checkpoint {} --out-dir {} --recover-tokens {}` \
         (one round, global allocation, recovery batch {} × {}, lr {}, distillation α {}; channels = \
         MoE channels + experts + SSM channels by Wanda, depth = one block by KL then channels, \
         width = `d_model` by activation). PPL: `llama-cpp` protocol, native runtime.\n\n\
         ![frontier](frontier.svg)\n\n| method | ratio | parameters | file bytes | PPL | seconds |\n|---|---|---|---|---|---|\n",
        a.checkpoint.display(),
        a.out_dir.display(),
        a.recover_tokens,
        a.batch_size,
        a.seq_len,
        a.lr,
        a.distill_alpha
    );
    for p in sweep {
        s += &format!(
            "| {} | {} | {} | {} | {:.4} | {:.0} |\n",
            p.method, p.ratio, p.params, p.file_bytes, p.ppl, p.seconds
        );
    }
    s += &format!(
        "\n## PPL vs recovery tokens ({} at ratio {})\n\n![tokens](frontier_tokens.svg)\n\n| recovery tokens | parameters | PPL | seconds |\n|---|---|---|---|\n",
        a.curve_method, a.curve_ratio
    );
    for p in curve {
        s += &format!(
            "| {} | {} | {:.4} | {:.0} |\n",
            p.recover_tokens, p.params, p.ppl, p.seconds
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> FrontierArgs {
        FrontierArgs {
            checkpoint: "c.safetensors".into(),
            out_dir: "o".into(),
            ratios: vec![0.5],
            methods: vec!["channels".into()],
            recover_tokens: 1000,
            token_curve: vec![],
            curve_ratio: 0.5,
            curve_method: "channels".into(),
            batch_size: 2,
            seq_len: 8,
            lr: 1e-3,
            distill_alpha: 0.5,
            data_dir: None,
        }
    }

    #[test]
    fn methods_map_to_prune_flags_and_unknown_ones_are_errors() {
        let a = args();
        let dir = Path::new("o/x");
        let depth = prune_args(&a, "depth", 0.5, 1000, dir).unwrap();
        assert_eq!((depth.remove_blocks, depth.allow_ssm), (1, true));
        let width = prune_args(&a, "width", 0.5, 1000, dir).unwrap();
        assert_eq!(width.targets.as_deref(), Some("d_model"));
        assert_eq!(width.importance, "activation");
        assert!(prune_args(&a, "magic", 0.5, 1000, dir).is_err());
    }

    #[test]
    fn report_lists_every_point() {
        let p = |m: &str, t| Point {
            method: m.into(),
            ratio: 0.5,
            recover_tokens: t,
            params: 1234,
            file_bytes: 5678,
            ppl: 9.5,
            seconds: 3.0,
        };
        let md = markdown(
            &args(),
            &[p("channels", 1000), p("width", 1000)],
            &[p("channels", 10)],
        );
        assert!(md.contains("| width | 0.5 | 1234 | 5678 | 9.5000 | 3 |"));
        assert!(md.contains("| 10 | 1234 | 9.5000 | 3 |"));
    }
}
