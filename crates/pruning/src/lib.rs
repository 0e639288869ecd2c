#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! The stage: [`run`] with [`PruneConfig`] (the `[stages.<name>.prune]` table), [`PruneInput`],
//! [`PruneEvent`], [`StageOutput`] / [`PruneReport`]. Dependency groups come from the model's
//! structural description ([`squish_core::model::structure`]); [`groups`] applies a plan to the
//! tensors, [`importance`] scores units (L1/L2 magnitude, Wanda, Taylor, expert utilisation),
//! [`allocate`] spreads the budget globally or uniformly, [`net`] runs the burn model for
//! calibration and recovery by distillation from the unpruned teacher; [`depth`] removes whole
//! blocks ranked by the KL their removal causes.
#![deny(missing_docs)]

pub mod allocate;
mod config;
pub mod depth;
pub mod groups;
pub mod importance;
pub mod net;

use std::time::Instant;

use squish_core::checkpoint::{self, Checkpoint, Provenance, Weights};
use squish_core::config::ModelConfig;
use squish_core::fsutil::sha256_hex;
use squish_core::model::CpuBackend;
use squish_core::model::structure::{DimKind, ModelStructure, describe, residual_width};
use squish_core::{Error, Result};

pub use config::{
    Allocation, GroupKind, Importance, PruneConfig, PruneData, PruneEvent, PruneInput, PruneReport,
    RoundReport, StageOutput, default_targets,
};

use allocate::{Problem, is_channel};
use net::Net;

impl PruneConfig {
    /// Checks the configuration against the model family.
    pub fn validate(&self, model: &ModelConfig) -> Result<()> {
        if !(0.0..1.0).contains(&self.ratio) {
            return Err(Error::invalid(format!(
                "prune: ratio {} not in [0, 1)",
                self.ratio
            )));
        }
        if self.rounds == 0 {
            return Err(Error::invalid("prune: rounds must be ≥ 1"));
        }
        if self.targets.is_empty() {
            return Err(Error::invalid(
                "prune: no targets (e.g. [\"moe_channels\"])",
            ));
        }
        if self.preserve_ssm && self.targets.contains(&GroupKind::SsmChannels) {
            return Err(Error::invalid(
                "prune: target `ssm_channels` would change the SSM's d_inner, but preserve_ssm = true; \
                 set preserve_ssm = false to allow pruning SSM channels",
            ));
        }
        let allowed: &[GroupKind] = match model {
            ModelConfig::SsmMoe(_) => &[
                GroupKind::MoeChannels,
                GroupKind::Experts,
                GroupKind::SsmChannels,
                GroupKind::DModel,
            ],
            ModelConfig::Llama(_) => &[GroupKind::FfnChannels, GroupKind::Heads, GroupKind::DModel],
        };
        if let Some(t) = self.targets.iter().find(|t| !allowed.contains(t)) {
            return Err(Error::invalid(format!(
                "prune: target {t:?} does not exist in a {} model (allowed: {allowed:?})",
                model.arch()
            )));
        }
        let blocks = model.n_layers();
        if self.remove_blocks >= blocks {
            return Err(Error::invalid(format!(
                "prune: remove_blocks {} would leave no block of the {blocks}",
                self.remove_blocks
            )));
        }
        if let Some(r) = &self.recover
            && r.steps > 0
        {
            r.validate()?;
        }
        Ok(())
    }

    fn needs_calibration(&self) -> bool {
        matches!(
            self.importance,
            Importance::Wanda | Importance::Taylor | Importance::Activation
        ) || (self.expert_utilisation
            && self
                .targets
                .iter()
                .any(|t| matches!(t, GroupKind::MoeChannels | GroupKind::Experts)))
    }
}

/// Parameters outside the embedding/classifier.
pub fn non_embedding_params(w: &Weights, s: &ModelStructure) -> Result<usize> {
    Ok(w.param_count() - groups::embedding_params(w, s)?)
}

/// Widths of every prunable dimension, `name → units`.
pub fn widths(s: &ModelStructure) -> std::collections::BTreeMap<String, usize> {
    s.dims.iter().map(|d| (d.name.clone(), d.units)).collect()
}

/// The plan removing about `target` parameters from `w` under `cfg` (`drop[dim]` = units).
fn plan(
    w: &Weights,
    s: &ModelStructure,
    cfg: &PruneConfig,
    scores: &[Vec<f64>],
    target: usize,
) -> Result<Vec<Vec<usize>>> {
    let kinds: Vec<DimKind> = cfg.targets.iter().map(|t| t.dim_kind()).collect();
    let eligible: Vec<bool> = s.dims.iter().map(|d| kinds.contains(&d.kind)).collect();
    let min_keep: Vec<usize> = s
        .dims
        .iter()
        .map(|d| {
            let m = if is_channel(d.kind) {
                cfg.min_width.max(d.min_units)
            } else {
                d.min_units
            };
            m.min(d.units)
        })
        .collect();
    // Costs count non-embedding parameters only, as the budget does (a residual channel also
    // removes an embedding column, which the budget does not count).
    let member_cost = s
        .dims
        .iter()
        .map(|d| groups::member_unit_params(w, d, &s.embedding))
        .collect::<Result<Vec<_>>>()?;
    let unit_cost = s
        .dims
        .iter()
        .map(|d| {
            (0..d.units)
                .map(|u| groups::unit_tensor_params(w, d, u))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let p = Problem {
        structure: s,
        scores,
        member_cost: &member_cost,
        unit_cost: &unit_cost,
        eligible: &eligible,
        min_keep: &min_keep,
        round_to: cfg.round_to,
    };
    Ok(match cfg.allocation {
        Allocation::Global => p.global(target),
        Allocation::Uniform => p.uniform(target),
    })
}

/// The pruning stage, as the pipeline runs it with `[stages.<name>.prune]`: prunes `input.ckpt`
/// under `cfg` and returns the smaller checkpoint (F32 tensors for everything touched, provenance
/// `stage = "prune"`) and the report. `on_event` sees progress. Same inputs and seed give
/// byte-identical checkpoints.
pub fn run(
    input: &PruneInput,
    cfg: &PruneConfig,
    on_event: &mut dyn FnMut(&PruneEvent),
) -> Result<StageOutput> {
    let (ckpt, data) = (input.ckpt, &input.data);
    let t0 = Instant::now();
    cfg.validate(&ckpt.config)?;
    // Width pruning with `rescale_norms` changes the norm epsilon, so the config is mutable.
    let mut config = ckpt.config.clone();
    let s0 = describe(&config, &ckpt.weights)?;
    s0.check_coverage(&ckpt.weights)?;
    let emb = groups::embedding_params(&ckpt.weights, &s0)?;
    let params0 = ckpt.weights.param_count();
    let nonemb0 = params0 - emb;
    let top_k = match &config {
        ModelConfig::SsmMoe(c) => c.top_k,
        ModelConfig::Llama(_) => 0,
    };
    let windows: Vec<Vec<u32>> = data.calib.iter().take(cfg.calib_windows).cloned().collect();
    let needs_windows = if cfg.remove_blocks > 0 {
        Some("remove_blocks".to_string())
    } else {
        matches!(
            cfg.importance,
            Importance::Wanda | Importance::Taylor | Importance::Activation
        )
        .then(|| format!("importance {:?}", cfg.importance))
    };
    if let Some(what) = needs_windows
        && windows.iter().all(|w| w.len() < 2)
    {
        return Err(Error::invalid(format!(
            "prune: {what} needs calibration windows (got none of ≥ 2 tokens)"
        )));
    }
    let device = CpuBackend::from_env()?.device();
    let teacher = Net::build(&ckpt.config, &ckpt.weights, &device)?;
    let measure = |net: &Net| -> Result<Option<f64>> {
        if data.valid.len() < 2 * cfg.eval_ctx {
            return Ok(None);
        }
        net.valid_nats(data.valid, cfg.eval_ctx, data.bos, cfg.eval_chunks)
            .map(Some)
    };
    let valid_unpruned = measure(&teacher)?;
    if let Some(n) = valid_unpruned {
        on_event(&PruneEvent::Valid {
            round: 0,
            when: "unpruned",
            nats: n,
        });
    }
    let recover = cfg.recover.clone().filter(|r| r.steps > 0);
    let mut w = ckpt.weights.clone();
    // Depth first: the blocks whose removal moves the output least go before any round.
    let mut removed_blocks = Vec::new();
    if cfg.remove_blocks > 0 {
        let scores = depth::block_kl(&config, &w, &windows, &device)?;
        let drop = depth::choose(&scores, cfg.remove_blocks);
        depth::remove_blocks(&mut config, &mut w, &drop)?;
        removed_blocks = drop.iter().map(|&b| (b, scores[b])).collect();
    }
    let mut rounds = Vec::new();
    for round in 1..=cfg.rounds {
        let tr = Instant::now();
        let target_cum =
            (cfg.ratio as f64 * nonemb0 as f64 * round as f64 / cfg.rounds as f64).round() as usize;
        on_event(&PruneEvent::RoundStart {
            round,
            rounds: cfg.rounds,
            target_removed: target_cum,
        });
        let s = describe(&config, &w)?;
        let removed_so_far = nonemb0.saturating_sub(non_embedding_params(&w, &s)?);
        let need = target_cum.saturating_sub(removed_so_far);
        let mut calib = importance::Calib::default();
        if cfg.needs_calibration() && !windows.is_empty() {
            let net = Net::build(&config, &w, &device)?;
            calib = importance::collect(&net, &w, top_k, &windows)?;
        }
        if cfg.importance == Importance::Taylor {
            let ad = Net::build(&config, &w, &device.clone().autodiff())?;
            calib.taylor = ad.taylor(&windows)?.into_iter().collect();
        }
        let scores =
            importance::unit_scores(&w, &s, cfg.importance, &calib, cfg.expert_utilisation)?;
        let drop = plan(&w, &s, cfg, &scores, need)?;
        let width = residual_width(&w, config.vocab_size())?;
        groups::apply_plan(&mut w, &s, &drop)?;
        let pruned_width = residual_width(&w, config.vocab_size())?;
        if cfg.rescale_norms && pruned_width != width {
            groups::rescale_norms(&mut config, &mut w, &s, width, pruned_width)?;
        }
        on_event(&PruneEvent::Pruned {
            round,
            params: w.param_count(),
        });
        let pruned = Net::build(&config, &w, &device)?;
        let before = measure(&pruned)?;
        if let Some(n) = before {
            on_event(&PruneEvent::Valid {
                round,
                when: "before_recovery",
                nats: n,
            });
        }
        let (mut after, mut log) = (None, Vec::new());
        if let Some(rc) = &recover {
            let mut rc = rc.clone();
            rc.seed ^= cfg
                .seed
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(round as u64);
            let student = Net::build(&config, &w, &device.clone().autodiff())?;
            let teach = |b: &[Vec<u32>]| teacher.logits(b);
            let (net, l) = student.train((data.train, data.valid, data.bos), &rc, &teach, |p| {
                on_event(&PruneEvent::Train {
                    round,
                    point: p.clone(),
                })
            })?;
            w = net.to_weights()?;
            log = l;
            after = measure(&Net::build(&config, &w, &device)?)?;
            if let Some(n) = after {
                on_event(&PruneEvent::Valid {
                    round,
                    when: "after_recovery",
                    nats: n,
                });
            }
        }
        let s = describe(&config, &w)?;
        rounds.push(RoundReport {
            round,
            non_embedding_params: non_embedding_params(&w, &s)?,
            valid_nats_before_recovery: before,
            valid_nats_after_recovery: after,
            recovery_log: log,
            seconds: tr.elapsed().as_secs_f64(),
        });
    }
    let s1 = describe(&config, &w)?;
    s1.check_coverage(&w)?;
    Net::build(&config, &w, &device)?; // shapes are consistent
    let nonemb1 = non_embedding_params(&w, &s1)?;
    let report = PruneReport {
        importance: cfg.importance,
        allocation: cfg.allocation,
        targets: cfg.targets.clone(),
        params_before: params0,
        params_after: w.param_count(),
        non_embedding_before: nonemb0,
        non_embedding_after: nonemb1,
        requested_ratio: cfg.ratio as f64,
        achieved_ratio: 1.0 - nonemb1 as f64 / nonemb0.max(1) as f64,
        widths_before: widths(&s0),
        widths_after: widths(&s1),
        valid_nats_unpruned: valid_unpruned,
        rounds,
        removed_blocks,
        recovery_tokens_per_round: recover
            .as_ref()
            .map_or(0, |r| r.steps * r.batch_size * r.seq_len),
        seconds: t0.elapsed().as_secs_f64(),
    };
    let checkpoint = output_checkpoint(ckpt, config, cfg, w, &report)?;
    Ok(StageOutput { checkpoint, report })
}

/// The pruned checkpoint (with `config`, the parent's up to a rescaled norm epsilon) with
/// provenance and metrics.
fn output_checkpoint(
    parent: &Checkpoint,
    config: ModelConfig,
    cfg: &PruneConfig,
    weights: Weights,
    report: &PruneReport,
) -> Result<Checkpoint> {
    let parent_sha = sha256_hex(&checkpoint::to_bytes(parent)?);
    let cfg_json = serde_json::to_string(cfg)
        .map_err(|e| Error::invalid(format!("serializing prune config: {e}")))?;
    let mut details = std::collections::BTreeMap::new();
    details.insert("method".to_string(), "structured_pruning".to_string());
    details.insert("prune_config".to_string(), cfg_json.clone());
    details.insert(
        "achieved_ratio".to_string(),
        format!("{:.6}", report.achieved_ratio),
    );
    details.insert("parent_stage".to_string(), parent.provenance.stage.clone());
    let mut metrics = std::collections::BTreeMap::new();
    metrics.insert("parameters".to_string(), report.params_after as f64);
    if let Some(n) = report
        .rounds
        .last()
        .and_then(|r| r.valid_nats_after_recovery.or(r.valid_nats_before_recovery))
    {
        metrics.insert("prune.valid_nats".to_string(), n);
    }
    Ok(Checkpoint {
        config,
        weights,
        provenance: Provenance {
            stage: "prune".into(),
            parent_sha256: Some(parent_sha),
            config_hash: Some(sha256_hex(cfg_json.as_bytes())),
            tool: format!("squish-prune {}", env!("CARGO_PKG_VERSION")),
            details,
        },
        metrics,
        tokenizer: parent.tokenizer.clone(),
    })
}
