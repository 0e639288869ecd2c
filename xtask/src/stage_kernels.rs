//! Pipeline stage `kernels`: every earlier stage's checkpoint on the native runtime, measured by
//! squish-kernels' [`speed::run`] (the same measurement as `cargo xtask bench`, in interleaved
//! rounds); this adapter picks the checkpoints, prints progress and builds the report.

use anyhow::{Context, Result};
use serde_json::json;
use squish_kernels::speed::{self, KernelsSettings, SpeedEvent};

use crate::pipeline::Ctx;

/// Runs the stage: (JSON, Markdown).
pub fn run(
    ctx: &Ctx,
    c: &KernelsSettings,
    fingerprint: &str,
) -> Result<(serde_json::Value, String)> {
    let checkpoints: Vec<_> = c
        .inputs
        .iter()
        .filter(|s| ctx.cfg.order.contains(s))
        .map(|s| (s.clone(), ctx.checkpoint_path(s)))
        .collect();
    let points = speed::run(&checkpoints, c, &mut |e| {
        let SpeedEvent::Round {
            round,
            rounds,
            stage,
            threads,
            activations,
            seconds,
        } = e;
        println!(
            "  [kernels] round {}/{rounds}: {stage} ×{threads} act {activations}: {:.3} ms",
            round + 1,
            seconds * 1e3
        );
    })
    .with_context(|| format!("benchmarking {:?} (run those stages first)", c.inputs))?;
    for p in &points {
        println!(
            "  [kernels] {} ×{} act {}: {:.3} ms median round, {:.3} ms best (prefill {:.0} tok/s, decode {:.0} tok/s)",
            p.stage,
            p.threads,
            p.activations,
            p.latency_ms,
            p.best_latency_ms,
            p.prefill_tok_s,
            p.decode_tok_s
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let json = json!({
        "stage": "kernels",
        "command": format!("cargo xtask bench --checkpoint <stage checkpoint> --threads N --prefill {} --decode {} --reps {} (× {} rounds)", c.prefill, c.decode, c.reps, c.rounds.max(1)),
        "fingerprint": fingerprint,
        "points": points,
        "loadavg": load.trim(),
        "settings": c,
    });
    Ok((json, speed::markdown(&points, c, load.trim())))
}
