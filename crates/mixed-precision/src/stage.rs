//! The mixed-precision stage as the pipeline runs it: the `mixed` and `qat` tables of
//! `[stages.<name>]` ([`MixedStageConfig`]) → per-tensor formats from measured sensitivity
//! ([`crate::mixed_checkpoint`]) → with `qat`, QAT of exactly that mix (the deliverable recipe) →
//! [`StageOutput`], checked against the byte budget as returned.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use squish_core::checkpoint::{self, Checkpoint};
use squish_core::codebook::CbScales;
use squish_core::{Error, Result};
use squish_quant::qat::CodebookTarget;
use squish_quant::{
    QatConfig, QatData, QatSettings, QuantEvent, QuantFormat, QuantReport, SmallFormat, StageInput,
    calibrate, qat_checkpoint,
};

use crate::config::{CandidateFormat, MixedConfig};
use crate::pipeline::mixed_checkpoint;
use crate::report::{MixedReport, SolveAttempt};

/// The token data the stage needs.
#[derive(Debug, Clone, Copy)]
pub struct MixedData<'a> {
    /// Calibration windows (BOS first; the first `calib_windows` are used for sensitivities).
    pub calib: &'a [Vec<u32>],
    /// Tokens for the measured perplexity (llama-cpp chunks of `eval_ctx`); empty = no
    /// measurement.
    pub valid: &'a [u32],
    /// BOS token id.
    pub bos: u32,
}

/// Progress of [`run`] and [`crate::mixed_checkpoint`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum MixedEvent {
    /// Candidate variants built.
    Variants {
        /// Tensors the allocation decides.
        tensors: usize,
        /// (tensor, candidate) options.
        options: usize,
    },
    /// Sensitivities read from the cache.
    CacheHit {
        /// The cache file.
        path: PathBuf,
    },
    /// Sensitivities must be measured.
    CacheMiss {
        /// The cache file that will be written, if any.
        path: Option<PathBuf>,
    },
    /// F32 reference computed.
    Reference {
        /// Windows.
        windows: usize,
        /// Scored positions.
        positions: usize,
        /// F32 loss (nats/token).
        base_nats: f64,
    },
    /// One sensitivity measured.
    Sensitivity {
        /// Measurements done.
        done: usize,
        /// Measurements in total.
        total: usize,
        /// Tensor.
        tensor: String,
        /// Candidate label.
        candidate: String,
        /// Mean KL per token.
        kl: f64,
        /// Δnats per token.
        dnats: f64,
    },
    /// A solve attempt.
    Solved(SolveAttempt),
    /// A perplexity measured.
    Measured {
        /// Point label.
        label: String,
        /// File bytes.
        file_bytes: u64,
        /// PPL.
        ppl: f64,
    },
    /// Calibration or a QAT step of the stage ([`run`]), as squish-quant reports it.
    Quant(QuantEvent),
    /// The QAT export of the chosen mix replaced the mix.
    QatExported {
        /// File bytes of the mix before QAT.
        mix_bytes: u64,
        /// File bytes of the QAT export.
        qat_bytes: u64,
    },
}

/// The stage's settings: `[stages.<name>.mixed]` and `[stages.<name>.qat]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixedStageConfig {
    /// Budget, candidates, objective … of the mix.
    pub mixed: MixedConfig,
    /// QAT of the chosen per-tensor formats: fine-tunes the latent F32 weights through fake-quant
    /// with exactly the mix's formats, then exports them.
    #[serde(default)]
    pub qat: Option<QatSettings>,
}

/// What the stage did: the mix and, with QAT, the fine-tuning of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedStageReport {
    /// The allocation, its frontier and sensitivities (measured before QAT).
    pub mixed: MixedReport,
    /// The QAT of the mix, when configured.
    pub qat: Option<QuantReport>,
}

/// What [`run`] returns.
#[derive(Debug, Clone)]
pub struct StageOutput {
    /// The mixed-precision checkpoint (the QAT export when QAT ran), within the budget.
    pub checkpoint: Checkpoint,
    /// What was done.
    pub report: MixedStageReport,
}

/// Bytes the solve keeps free for the QAT export, whose provenance carries one more entry than
/// the plain mix's.
pub const QAT_RESERVE_BYTES: u64 = 128;

/// The file bytes of `ckpt` (`checkpoint::to_bytes`), checked against `limit`: the one budget
/// check of the stage, also for callers that change the provenance before saving.
pub fn check_budget(ckpt: &Checkpoint, limit: Option<u64>) -> Result<u64> {
    let bytes = checkpoint::to_bytes(ckpt)?.len() as u64;
    match limit {
        Some(n) if bytes > n => Err(Error::invalid(format!(
            "the checkpoint is {bytes} bytes, over the budget of {n} bytes"
        ))),
        _ => Ok(bytes),
    }
}

/// The QAT plan of a mix: every 2-D tensor's chosen format — integer formats and kept floats
/// (`None`) in the first map, codebooks (log8 scales) in the second. The report names every
/// tensor of the checkpoint, so the plan covers all 2-D tensors and the QAT's default format
/// applies to none of them.
pub fn qat_plan(ckpt: &Checkpoint, report: &MixedReport) -> Result<QatPlanMaps> {
    let (mut plan, mut codebooks) = (BTreeMap::new(), BTreeMap::new());
    for t in &report.tensors {
        let is_2d = ckpt
            .weights
            .get(&t.name)
            .map(|w| w.shape.len() == 2)
            .unwrap_or(false);
        if !is_2d {
            continue;
        }
        match CandidateFormat::parse(&t.format)? {
            CandidateFormat::Codebook { bits, group } => {
                codebooks.insert(
                    t.name.clone(),
                    CodebookTarget {
                        bits,
                        group,
                        scales: CbScales::Log8,
                    },
                );
            }
            format => {
                plan.insert(t.name.clone(), format.quant_format()?);
            }
        }
    }
    Ok((plan, codebooks))
}

/// [`qat_plan`]'s result: per-tensor uniform formats (`None` = float) and codebook overrides.
pub type QatPlanMaps = (
    BTreeMap<String, Option<QuantFormat>>,
    BTreeMap<String, CodebookTarget>,
);

/// Runs the stage on `input` (the F32 checkpoint and its tokens): calibration statistics once if
/// GPTQ (`mixed.gptq`) or the QAT scales need them, the mix under the budget (less
/// [`QAT_RESERVE_BYTES`] with QAT), then QAT of the mix (training on `input.train`). Errors as
/// [`crate::mixed_checkpoint`], and when the result is over the budget.
pub fn run(
    input: &StageInput,
    cfg: &MixedStageConfig,
    on_event: &mut dyn FnMut(&MixedEvent),
) -> Result<StageOutput> {
    let ckpt = input.ckpt;
    let limit = cfg.mixed.budget.byte_limit(ckpt.weights.param_count());
    let mut mixed = cfg.mixed.clone();
    if let (Some(n), Some(_)) = (limit, &cfg.qat) {
        mixed.budget = crate::Budget::Bytes(n.saturating_sub(QAT_RESERVE_BYTES));
    }
    let qat_stats = cfg.qat.as_ref().is_some_and(QatSettings::needs_calibration);
    let stats = if mixed.gptq || qat_stats {
        Some(calibrate(ckpt, input.calib, &mut |e| {
            on_event(&MixedEvent::Quant(e.clone()))
        })?)
    } else {
        None
    };
    let data = MixedData {
        calib: input.calib,
        valid: input.valid,
        bos: input.bos,
    };
    let gptq_stats = stats.as_ref().filter(|_| mixed.gptq);
    let (mix, report) = mixed_checkpoint(ckpt, &mixed, &data, gptq_stats, on_event)?;
    let Some(q) = &cfg.qat else {
        check_budget(&mix, limit)?;
        let report = MixedStageReport {
            mixed: report,
            qat: None,
        };
        return Ok(StageOutput {
            checkpoint: mix,
            report,
        });
    };
    let mut quant = QatConfig::default().quant;
    quant.small = if mixed.small_f16 {
        SmallFormat::F16
    } else {
        SmallFormat::F32
    };
    let (per_tensor, codebooks) = qat_plan(ckpt, &report)?;
    let mut qcfg = q.config(quant, per_tensor)?;
    qcfg.per_tensor_codebook = codebooks;
    let qdata = QatData {
        train: input.train,
        valid: input.valid,
        bos: input.bos,
        teacher: input.teacher,
    };
    let calib = stats.as_ref().filter(|_| qat_stats);
    let (mut qat, qat_report) = qat_checkpoint(ckpt, &qcfg, &qdata, calib, &mut |p| {
        on_event(&MixedEvent::Quant(QuantEvent::Train(p.clone())))
    })?;
    let mut prov = mix.provenance.clone();
    prov.details.insert(
        "qat".into(),
        format!(
            "{} steps, distill α {}",
            q.train.steps, q.train.distill_alpha
        ),
    );
    qat.provenance = prov;
    let qat_bytes = check_budget(&qat, limit)?;
    on_event(&MixedEvent::QatExported {
        mix_bytes: checkpoint::to_bytes(&mix)?.len() as u64,
        qat_bytes,
    });
    let report = MixedStageReport {
        mixed: report,
        qat: Some(qat_report),
    };
    Ok(StageOutput {
        checkpoint: qat,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::checkpoint::TensorData;
    use squish_core::config::{ModelConfig, SsmMoeConfig};
    use squish_core::model::ssm_moe_weights::init_weights;

    /// A tiny random SsmMoe (`dt_proj` rows 2 wide, experts 16 wide).
    fn tiny_ssm_moe() -> Checkpoint {
        let c: SsmMoeConfig = toml::from_str("d_model = 16\nn_layers = 1\nvocab_size = 32\nseq_len = 64\nd_inner = 32\nd_state = 4\nd_conv = 4\ndt_rank = 2\nn_experts = 2\ntop_k = 1\nexpert_hidden = 16").unwrap();
        Checkpoint {
            config: ModelConfig::SsmMoe(c.clone()),
            weights: init_weights(&c, 4).unwrap(),
            provenance: Default::default(),
            metrics: Default::default(),
            tokenizer: None,
        }
    }

    /// A token stream over the tiny vocabulary and six 64-token calibration windows of it.
    fn tokens() -> (Vec<u32>, Vec<Vec<u32>>) {
        let toks: Vec<u32> = (0..3000u32).map(|i| 1 + (i * 5 + i / 7) % 31).collect();
        let calib = toks.chunks(64).take(6).map(<[u32]>::to_vec).collect();
        (toks, calib)
    }

    /// The stage input: train on `toks`, validate on its first 1024 tokens, no teacher.
    fn stage_input<'a>(
        ckpt: &'a Checkpoint,
        toks: &'a [u32],
        calib: &'a [Vec<u32>],
    ) -> StageInput<'a> {
        StageInput {
            ckpt,
            calib,
            train: toks,
            valid: &toks[..1024],
            bos: 1,
            teacher: None,
        }
    }

    /// The deliverable recipe on an SsmMoe with calibration statistics: GPTQ variants, the mix
    /// under the budget less the reserve, then QAT with exactly the mix's formats; the export is
    /// within the configured budget, statistics are collected once, every step is reported.
    #[test]
    fn mix_then_qat_keeps_the_formats_and_the_budget() {
        let ckpt = tiny_ssm_moe();
        let (toks, calib) = tokens();
        let input = stage_input(&ckpt, &toks, &calib);
        let cfg: MixedStageConfig = toml::from_str(
            "[mixed]\nbudget = { bits_per_param = 16.0 }\ncalib_windows = 4\neval_ctx = 64\n\
             frontier_points = 2\n[qat.train]\nsteps = 2\nbatch_size = 2\nseq_len = 32\n\
             lr = 1e-3\ndistill_alpha = 1.0\neval_chunks = 1",
        )
        .unwrap();
        let (mut calibrated, mut steps, mut exported) = (0, 0, None);
        let out = run(&input, &cfg, &mut |e| match e {
            MixedEvent::Quant(QuantEvent::Calibrated { .. }) => calibrated += 1,
            MixedEvent::Quant(QuantEvent::Train(_)) => steps += 1,
            MixedEvent::QatExported { qat_bytes, .. } => exported = Some(*qat_bytes),
            _ => {}
        })
        .unwrap();
        assert_eq!((calibrated, steps), (1, 2));
        let limit = cfg.mixed.budget.byte_limit(ckpt.weights.param_count());
        let bytes = check_budget(&out.checkpoint, limit).unwrap();
        assert_eq!(exported, Some(bytes));
        assert_eq!(
            out.report.mixed.budget,
            crate::Budget::Bytes(limit.unwrap() - QAT_RESERVE_BYTES)
        );
        assert_eq!(out.report.qat.as_ref().unwrap().method, "qat");
        assert!(out.checkpoint.provenance.details["qat"].starts_with("2 steps"));
        let mut quantized = 0;
        for t in &out.report.mixed.tensors {
            let stored = &out.checkpoint.weights.get(&t.name).unwrap().data;
            match (CandidateFormat::parse(&t.format).unwrap(), stored) {
                (CandidateFormat::Int { bits, group, .. }, TensorData::Quant(q)) => {
                    assert_eq!(q.bits.bits(), bits, "{}", t.name);
                    assert_eq!(q.group, group.unwrap_or(q.cols), "{}", t.name);
                    quantized += 1;
                }
                (CandidateFormat::Int { .. }, other) => panic!("{}: {other:?}", t.name),
                (_, TensorData::Quant(_)) => panic!("{} quantized by QAT only", t.name),
                _ => {}
            }
        }
        assert!(quantized > 0);
        let e = check_budget(&out.checkpoint, Some(bytes - 1)).unwrap_err();
        assert!(e.to_string().contains("over the budget"), "{e}");
    }

    /// Codebook picks of the mix are trained as codebooks by its QAT (not dropped to floats).
    #[test]
    fn mix_with_codebooks_then_qat_trains_the_codebooks() {
        let ckpt = tiny_ssm_moe();
        let (toks, calib) = tokens();
        let input = stage_input(&ckpt, &toks, &calib);
        let cfg: MixedStageConfig = toml::from_str(
            "[mixed]\nbudget = { bits_per_param = 14.0 }\ncalib_windows = 4\neval_ctx = 64\n\
             frontier_points = 0\ncandidates = [\"f16\", { codebook = { bits = 3 } }, \
             { codebook = { bits = 2, group = 8 } }]\n\
             [qat.train]\nsteps = 2\nbatch_size = 2\nseq_len = 32\nlr = 1e-3\n\
             distill_alpha = 1.0\neval_chunks = 1",
        )
        .unwrap();
        let out = run(&input, &cfg, &mut |_| {}).unwrap();
        let mut coded = 0;
        for t in &out.report.mixed.tensors {
            let stored = &out.checkpoint.weights.get(&t.name).unwrap().data;
            match (CandidateFormat::parse(&t.format).unwrap(), stored) {
                (CandidateFormat::Codebook { bits, group }, TensorData::Codebook(c)) => {
                    assert_eq!(c.bits, bits, "{}", t.name);
                    assert_eq!(c.group, group.unwrap_or(c.cols), "{}", t.name);
                    assert_eq!(c.scale_format, CbScales::Log8);
                    coded += 1;
                }
                (CandidateFormat::Codebook { .. }, other) => panic!("{}: {other:?}", t.name),
                _ => {}
            }
        }
        assert!(coded > 0, "the mix chose no codebook");
        let limit = cfg.mixed.budget.byte_limit(ckpt.weights.param_count());
        check_budget(&out.checkpoint, limit).unwrap();
    }

    #[test]
    fn the_stage_table_rejects_unknown_keys() {
        let ok: MixedStageConfig = toml::from_str("[mixed]\nbudget = { bytes = 80000 }").unwrap();
        assert!(ok.qat.is_none());
        assert!(toml::from_str::<MixedStageConfig>("[mixed]\n[qatt]").is_err());
    }
}
