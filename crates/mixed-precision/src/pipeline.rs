//! [`mixed_checkpoint`]: sensitivities (cached) → exact DP under the real file size → measured
//! check of additivity → frontier.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use squish_core::checkpoint::{self, Checkpoint, Provenance};
use squish_core::{Result, fsutil};
use squish_quant::Calibration;

use crate::config::{CandidateFormat, MixedConfig};
use crate::mix::{self, Item};
use crate::report::{
    FrontierPoint, MixedReport, PointKind, ProxyReport, SensitivityRow, SolveAttempt, TensorChoice,
    spearman,
};
use crate::sensitivity::{
    CacheEntry, Job, Reference, SensitivityCache, load_cache, measure, save_cache, stats_digest,
    windows_digest,
};
use crate::solve::{Knapsack, Solution};
use crate::stage::{MixedData, MixedEvent};

/// Everything the solve and the measurements share.
pub(crate) struct Ctx<'a> {
    pub ckpt: &'a Checkpoint,
    pub cfg: &'a MixedConfig,
    pub data: &'a MixedData<'a>,
    pub items: Vec<Item>,
    pub prov: Provenance,
    pub params: usize,
    pub reference: Reference,
    pub base_ppl: Option<f64>,
}

impl Ctx<'_> {
    pub fn build(&self, picks: &[usize]) -> Checkpoint {
        mix::build(self.ckpt, &self.items, picks, &self.prov)
    }
    pub fn measure(&self, ck: &Checkpoint) -> Result<Option<f64>> {
        if self.data.valid.is_empty() {
            return Ok(None);
        }
        mix::measure_ppl(ck, self.data.valid, self.cfg.eval_ctx, self.data.bos).map(Some)
    }
    fn point(
        &self,
        label: String,
        kind: PointKind,
        picks: &[usize],
        measure: bool,
        on_event: &mut dyn FnMut(&MixedEvent),
    ) -> Result<(Checkpoint, FrontierPoint)> {
        let ck = self.build(picks);
        let fb = mix::file_bytes(&ck)?;
        let pred = mix::predicted(&self.items, picks, self.cfg.objective);
        let (measured_ppl, calib) = if measure {
            let m = self.measure(&ck)?;
            if let Some(ppl) = m {
                on_event(&MixedEvent::Measured {
                    label: label.clone(),
                    file_bytes: fb,
                    ppl,
                });
            }
            let c = self.reference.score(&ck.config, &ck.weights)?.dnats;
            (m, Some(c))
        } else {
            (None, None)
        };
        let p = FrontierPoint {
            label,
            kind,
            file_bytes: fb,
            bits_per_param: fb as f64 * 8.0 / self.params as f64,
            predicted_dnats: pred,
            predicted_ppl: self.base_ppl.map(|b| b * pred.exp()),
            corrected_ppl: None,
            measured_ppl,
            measured_calib_dnats: calib,
        };
        Ok((ck, p))
    }
}

fn sensitivities(
    ctx: &mut Ctx<'_>,
    stats: Option<&Calibration>,
    windows: &[Vec<u32>],
    on_event: &mut dyn FnMut(&MixedEvent),
) -> Result<(String, Option<PathBuf>, bool, f64)> {
    let parent = ctx.prov.parent_sha256.clone().unwrap_or_default();
    let labels: Vec<String> = ctx.cfg.candidates.iter().map(|c| c.label()).collect();
    let key_src = serde_json::json!({
        "version": 1,
        "checkpoint": parent,
        "calib": windows_digest(windows),
        "stats": stats_digest(stats),
        "candidates": labels,
        "small_f16": ctx.cfg.small_f16,
        "gptq": ctx.cfg.gptq,
    });
    let key = fsutil::sha256_hex(key_src.to_string().as_bytes());
    let dir = ctx.cfg.cache_dir.clone();
    let path = dir
        .as_ref()
        .map(|d| crate::sensitivity::cache_path(d, &key));
    if let Some(d) = &dir
        && let Some(c) = load_cache(d, &key)?
    {
        let lookup: BTreeMap<(&str, &str), &CacheEntry> = c
            .entries
            .iter()
            .map(|e| ((e.tensor.as_str(), e.candidate.as_str()), e))
            .collect();
        let mut all = Vec::new();
        for it in &ctx.items {
            let s: Option<Vec<_>> = it
                .options
                .iter()
                .map(|v| {
                    lookup
                        .get(&(it.name.as_str(), v.format.label().as_str()))
                        .filter(|e| e.sha256 == v.sha256)
                        .map(|e| e.score)
                })
                .collect();
            all.push(s);
        }
        if all.iter().all(Option::is_some) {
            for (it, s) in ctx.items.iter_mut().zip(all) {
                it.scores = s.unwrap_or_default();
            }
            on_event(&MixedEvent::CacheHit {
                path: path.clone().unwrap_or_default(),
            });
            return Ok((key, path, true, 0.0));
        }
        tracing::warn!("sensitivity cache {key} is stale (tensor bytes differ); re-measuring");
    }
    on_event(&MixedEvent::CacheMiss { path: path.clone() });
    let t0 = Instant::now();
    let mut jobs = Vec::new();
    let mut at = Vec::new();
    for (i, it) in ctx.items.iter().enumerate() {
        for (k, v) in it.options.iter().enumerate() {
            if v.format == crate::config::CandidateFormat::F32 {
                continue; // the unchanged tensor: exactly 0
            }
            jobs.push(Job {
                tensor: it.name.clone(),
                value: squish_core::checkpoint::WeightTensor {
                    shape: it.shape.clone(),
                    data: v.data.clone(),
                },
            });
            at.push((i, k));
        }
    }
    let total = jobs.len();
    let mut done = 0;
    let scores = measure(
        &ctx.ckpt.config,
        &ctx.ckpt.weights,
        &ctx.reference,
        &jobs,
        ctx.cfg.threads,
        |j, s| {
            done += 1;
            let (i, k) = at[j];
            on_event(&MixedEvent::Sensitivity {
                done,
                total,
                tensor: ctx.items[i].name.clone(),
                candidate: ctx.items[i].options[k].format.label(),
                kl: s.kl,
                dnats: s.dnats,
            });
        },
    )?;
    for it in ctx.items.iter_mut() {
        it.scores = vec![Default::default(); it.options.len()];
    }
    for (&(i, k), s) in at.iter().zip(scores) {
        ctx.items[i].scores[k] = s;
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut written = None;
    if let Some(d) = &dir {
        let entries = ctx
            .items
            .iter()
            .flat_map(|it| {
                it.options.iter().zip(&it.scores).map(|(v, s)| CacheEntry {
                    tensor: it.name.clone(),
                    candidate: v.format.label(),
                    sha256: v.sha256.clone(),
                    score: *s,
                })
            })
            .collect();
        let c = SensitivityCache {
            key: key.clone(),
            base_nats: ctx.reference.base_nats,
            positions: ctx.reference.positions,
            entries,
        };
        written = Some(save_cache(d, &c)?);
    }
    Ok((key, written.or(path), false, secs))
}

/// Builds the mixed-precision checkpoint of the F32 `ckpt` under `cfg.budget` (see the crate
/// docs). `stats` (squish-quant calibration statistics of `ckpt`) enables GPTQ and the
/// output-error proxy. `on_event` receives progress. Errors: invalid settings, a quantized input,
/// no calibration windows, a budget below the smallest possible mix (the message names both
/// sizes), unreachable ΔPPL targets.
pub fn mixed_checkpoint(
    ckpt: &Checkpoint,
    cfg: &MixedConfig,
    data: &MixedData,
    stats: Option<&Calibration>,
    on_event: &mut dyn FnMut(&MixedEvent),
) -> Result<(Checkpoint, MixedReport)> {
    cfg.validate()?;
    let windows = &data.calib[..cfg.calib_windows.min(data.calib.len())];
    let parent = fsutil::sha256_hex(&checkpoint::to_bytes(ckpt)?);
    let items = mix::items(ckpt, cfg, stats)?;
    on_event(&MixedEvent::Variants {
        tensors: items.len(),
        options: items.iter().map(|i| i.options.len()).sum(),
    });
    let prov = Provenance {
        stage: "mixed_precision".into(),
        parent_sha256: Some(parent.clone()),
        config_hash: Some(cfg.result_hash()?),
        tool: format!("squish-mixed {}", env!("CARGO_PKG_VERSION")),
        details: BTreeMap::from([("budget".to_string(), cfg.budget.label())]),
    };
    let reference = Reference::new(&ckpt.config, &ckpt.weights, windows)?;
    on_event(&MixedEvent::Reference {
        windows: windows.len(),
        positions: reference.positions,
        base_nats: reference.base_nats,
    });
    let mut ctx = Ctx {
        ckpt,
        cfg,
        data,
        items,
        prov,
        params: ckpt.weights.param_count().max(1),
        reference,
        base_ppl: None,
    };
    let (key, cache_path, cache_hit, secs) = sensitivities(&mut ctx, stats, windows, on_event)?;
    if !data.valid.is_empty() {
        let b = mix::measure_ppl(ckpt, data.valid, cfg.eval_ctx, data.bos)?;
        on_event(&MixedEvent::Measured {
            label: "f32".into(),
            file_bytes: mix::file_bytes(ckpt)?,
            ppl: b,
        });
        ctx.base_ppl = Some(b);
    }
    let losses = ctx
        .items
        .iter()
        .map(|it| {
            (0..it.options.len())
                .map(|k| crate::solve::Choice {
                    bytes: it.options[k].bytes + it.options[k].header_bytes,
                    loss: it.loss(k, cfg.objective),
                })
                .collect()
        })
        .collect();
    let cells = cfg
        .dp_max_states
        .saturating_mul(ctx.items.len().max(1))
        .min(1 << 27);
    let ks = Knapsack::new(losses, cells)?;
    let mut attempts = Vec::new();
    let (chosen, measured) = crate::budget::fit(&ctx, &ks, &mut attempts, on_event)?;
    finish(
        ctx,
        ks,
        (chosen, measured),
        attempts,
        (key, cache_path, cache_hit, secs),
        on_event,
    )
}

type CacheInfo = (String, Option<PathBuf>, bool, f64);

fn finish(
    ctx: Ctx<'_>,
    ks: Knapsack,
    (chosen, last_measured): (Solution, Option<f64>),
    attempts: Vec<SolveAttempt>,
    (key, cache_path, cache_hit, secs): CacheInfo,
    on_event: &mut dyn FnMut(&MixedEvent),
) -> Result<(Checkpoint, MixedReport)> {
    let cfg = ctx.cfg;
    let (out, mut chosen_pt) = if let Some(m) = last_measured {
        // The dual problem already measured this mix.
        let (ck, mut p) = ctx.point(
            "chosen".into(),
            PointKind::Chosen,
            &chosen.picks,
            false,
            on_event,
        )?;
        p.measured_ppl = Some(m);
        p.measured_calib_dnats = Some(ctx.reference.score(&ck.config, &ck.weights)?.dnats);
        (ck, p)
    } else {
        ctx.point(
            "chosen".into(),
            PointKind::Chosen,
            &chosen.picks,
            true,
            on_event,
        )?
    };
    let mut frontier = Vec::new();
    let n = cfg.frontier_points;
    for k in 0..n {
        // Quadratic spacing: the interesting part of the frontier is near the smallest mixes.
        let frac = if n == 1 {
            1.0
        } else {
            (k as f64 / (n - 1) as f64).powi(2)
        };
        let pb = ks.min_bytes() + ((ks.max_bytes() - ks.min_bytes()) as f64 * frac) as u64;
        let s = ks.solve_bytes(pb)?;
        let (_, p) = ctx.point(
            format!("mixed {k}"),
            PointKind::Mixed,
            &s.picks,
            cfg.measure_frontier,
            on_event,
        )?;
        frontier.push(p);
    }
    let uniform = |c: &&CandidateFormat| {
        c.is_int(4) || c.is_int(8) || matches!(c, CandidateFormat::Codebook { .. })
    };
    for c in cfg.candidates.iter().filter(uniform) {
        if let Some(picks) = mix::uniform_picks(&ctx.items, *c) {
            let label = format!("uniform {}", c.label());
            let (_, p) = ctx.point(
                label,
                PointKind::Uniform,
                &picks,
                cfg.measure_frontier,
                on_event,
            )?;
            frontier.push(p);
        }
    }
    // Additivity: fit measured ln(PPL/PPL_F32) ≈ α · predicted over every measured point.
    let correction = ctx.base_ppl.and_then(|b| {
        let (mut num, mut den) = (0.0, 0.0);
        for p in frontier.iter().chain(std::iter::once(&chosen_pt)) {
            if let Some(m) = p.measured_ppl {
                num += (m / b).ln() * p.predicted_dnats;
                den += p.predicted_dnats * p.predicted_dnats;
            }
        }
        (den > 0.0).then(|| num / den)
    });
    let base_ppl = ctx.base_ppl;
    let fix = |p: &mut FrontierPoint| {
        if let (Some(b), Some(a)) = (base_ppl, correction) {
            p.corrected_ppl = Some(b * (a * p.predicted_dnats).exp());
        }
    };
    frontier.iter_mut().for_each(fix);
    fix(&mut chosen_pt);
    frontier.push(chosen_pt.clone());
    frontier.sort_by(|a, b| a.file_bytes.cmp(&b.file_bytes).then(a.label.cmp(&b.label)));
    let rows: Vec<SensitivityRow> = ctx
        .items
        .iter()
        .flat_map(|it| {
            it.options
                .iter()
                .zip(&it.scores)
                .map(|(v, s)| SensitivityRow {
                    tensor: it.name.clone(),
                    candidate: v.format.label(),
                    method: v.method.clone(),
                    bytes: v.bytes,
                    kl: s.kl,
                    dnats: s.dnats,
                    proxy: v.proxy,
                })
        })
        .collect();
    let quant: Vec<&SensitivityRow> = rows
        .iter()
        .filter(|r| {
            r.candidate != "f32"
                && ctx
                    .items
                    .iter()
                    .any(|i| i.quantizable && i.name == r.tensor)
        })
        .collect();
    let col = |f: fn(&SensitivityRow) -> f64| quant.iter().map(|r| f(r)).collect::<Vec<f64>>();
    let (px, kl, dn) = (col(|r| r.proxy), col(|r| r.kl), col(|r| r.dnats));
    let proxy = ProxyReport {
        proxy: "mean squared layer-output error per token tr(ΔW·XᵀX·ΔWᵀ)/n (weight MSE per row \
                without statistics)"
            .into(),
        pairs: quant.len(),
        spearman_kl: spearman(&px, &kl),
        spearman_dnats: spearman(&px, &dn),
        spearman_kl_dnats: spearman(&kl, &dn),
    };
    let mut tensors: Vec<TensorChoice> = ctx
        .items
        .iter()
        .zip(&chosen.picks)
        .map(|(it, &k)| TensorChoice {
            name: it.name.clone(),
            shape: it.shape.clone(),
            format: it.options[k].format.label(),
            method: it.options[k].method.clone(),
            bytes: it.options[k].bytes,
            kl: it.scores[k].kl,
            dnats: it.scores[k].dnats,
        })
        .collect();
    for (name, t) in out.weights.iter() {
        if !ctx.items.iter().any(|i| &i.name == name) {
            tensors.push(TensorChoice {
                name: name.clone(),
                shape: t.shape.clone(),
                format: t.format_name().into(),
                method: "kept".into(),
                bytes: t.storage_bytes() as u64,
                kl: 0.0,
                dnats: 0.0,
            });
        }
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let m = chosen_pt.measured_ppl;
    let report = MixedReport {
        budget: cfg.budget,
        byte_limit: cfg.budget.byte_limit(ctx.params),
        objective: cfg.objective,
        parameters: ctx.params,
        parent_sha256: ctx.prov.parent_sha256.clone().unwrap_or_default(),
        calib_windows: ctx.cfg.calib_windows.min(ctx.data.calib.len()),
        calib_positions: ctx.reference.positions,
        calib_base_nats: ctx.reference.base_nats,
        base_ppl,
        cache_path: cache_path.map(|p| p.display().to_string()),
        cache_hit,
        cache_key: key,
        sensitivity_seconds: secs,
        dp_unit: ks.unit(),
        dp_states: ks.states(),
        dp_exact: ks.exact(),
        file_bytes: chosen_pt.file_bytes,
        bits_per_param: chosen_pt.bits_per_param,
        payload_bytes: out.weights.storage_bytes() as u64,
        predicted_dnats: chosen_pt.predicted_dnats,
        predicted_ppl: chosen_pt.predicted_ppl,
        measured_ppl: m,
        measured_dppl_pct: m.zip(base_ppl).map(|(m, b)| 100.0 * (m / b - 1.0)),
        prediction_error_pct: m
            .zip(chosen_pt.predicted_ppl)
            .map(|(m, p)| 100.0 * (p - m) / m),
        measured_calib_dnats: chosen_pt.measured_calib_dnats.unwrap_or(0.0),
        correction,
        attempts,
        tensors,
        proxy,
        frontier,
        sensitivity: rows,
    };
    Ok((out, report))
}
