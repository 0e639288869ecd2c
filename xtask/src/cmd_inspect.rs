//! `cargo xtask inspect`: tensors, formats, bytes and metadata of a checkpoint.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;
use squish_core::checkpoint::{self, TensorData};

/// Arguments of `inspect`.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// Checkpoint (.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Entry point of `inspect`.
pub fn run(a: &InspectArgs) -> Result<()> {
    let ck = checkpoint::load(&a.checkpoint)?;
    let file_bytes = std::fs::metadata(&a.checkpoint)?.len();
    let rows: Vec<_> = ck
        .weights
        .iter()
        .map(|(name, t)| {
            let (group, asym, levels, scales) = match &t.data {
                TensorData::Quant(q) => (Some(q.group), Some(q.is_asymmetric()), None, None),
                TensorData::Codebook(c) => (
                    Some(c.group),
                    Some(false),
                    Some(c.levels.clone()),
                    Some(c.scale_format.name()),
                ),
                _ => (None, None, None, None),
            };
            json!({"name": name, "format": t.format_name(), "shape": t.shape, "group": group, "asym": asym, "bytes": t.storage_bytes(), "params": t.numel(), "levels": levels, "scales": scales})
        })
        .collect();
    if a.json {
        let out = json!({
            "file": a.checkpoint, "file_bytes": file_bytes, "arch": ck.config.arch(), "config": ck.config,
            "parameters": ck.weights.param_count(), "tensor_bytes": ck.weights.storage_bytes(),
            "provenance": ck.provenance, "metrics": ck.metrics, "tokenizer": ck.tokenizer, "tensors": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{}  ({} bytes on disk, arch {}, {} parameters)",
        a.checkpoint.display(),
        file_bytes,
        ck.config.arch(),
        ck.weights.param_count()
    );
    println!("config: {}", serde_json::to_string(&ck.config)?);
    println!("provenance: {}", serde_json::to_string(&ck.provenance)?);
    println!("metrics: {}", serde_json::to_string(&ck.metrics)?);
    println!(
        "{:<40} {:>6} {:>14} {:>6} {:>5} {:>9} {:>6}  levels (codebook tensors, × group scale)",
        "tensor", "format", "shape", "group", "asym", "bytes", "scales"
    );
    for r in rows {
        let shape = r["shape"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("×")
            })
            .unwrap_or_default();
        let opt = |v: &serde_json::Value| {
            if v.is_null() {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        let levels = r["levels"]
            .as_array()
            .map(|l| {
                let v: Vec<String> = l
                    .iter()
                    .map(|x| format!("{:+.4}", x.as_f64().unwrap_or(f64::NAN)))
                    .collect();
                format!("  [{}]", v.join(" "))
            })
            .unwrap_or_default();
        println!(
            "{:<40} {:>6} {:>14} {:>6} {:>5} {:>9} {:>6}{levels}",
            r["name"].as_str().unwrap_or(""),
            r["format"].as_str().unwrap_or(""),
            shape,
            opt(&r["group"]),
            opt(&r["asym"]),
            r["bytes"],
            r["scales"].as_str().unwrap_or("-")
        );
    }
    Ok(())
}
