//! The quantization stage as the pipeline runs it: [`QuantSettings`] (module
//! [`crate::settings`]) → calibration where the method needs it → post-training quantization
//! ([`crate::quantize_checkpoint`]) or QAT ([`crate::qat_checkpoint`]) → [`StageOutput`].

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use squish_core::Result;
use squish_core::checkpoint::Checkpoint;
use squish_core::model::CpuBackend;
use squish_core::train::TrainPoint;

use crate::calibration::Calibration;
use crate::pipeline::quantize_checkpoint;
use crate::qat::{QatData, qat_checkpoint};
use crate::report::QuantReport;
pub use crate::settings::{QatSettings, QuantMethod, QuantSettings};

/// What a compression stage reads: the F32 checkpoint and the corpus tokenized by its tokenizer
/// (every story BOS-first, as the pipeline prepares them).
#[derive(Debug, Clone, Copy)]
pub struct StageInput<'a> {
    /// The F32 checkpoint.
    pub ckpt: &'a Checkpoint,
    /// Calibration windows (BOS first).
    pub calib: &'a [Vec<u32>],
    /// Training stream (QAT).
    pub train: &'a [u32],
    /// Validation stream (QAT's validation).
    pub valid: &'a [u32],
    /// The BOS id.
    pub bos: u32,
    /// QAT's distillation teacher ([`crate::QatData::teacher`]); `None` = the input itself.
    pub teacher: Option<&'a Checkpoint>,
}

/// What the stage returns: the quantized checkpoint and its report (the report's table row is
/// filled by [`QuantReport::finish_row`] once the file is written and measured).
#[derive(Debug, Clone)]
pub struct StageOutput {
    /// The packed checkpoint (provenance stage `int4_native` / `int8`).
    pub checkpoint: Checkpoint,
    /// What was done, per tensor.
    pub report: QuantReport,
}

/// Progress of [`run`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum QuantEvent {
    /// Calibration statistics collected.
    Calibrated {
        /// Windows run through the F32 model.
        windows: usize,
        /// Tokens in them.
        tokens: usize,
        /// Wall seconds.
        seconds: f64,
    },
    /// One QAT training step.
    Train(TrainPoint),
}

/// Calibration statistics of the F32 `ckpt` on `windows`, on the backend `SQUISH_BACKEND` names
/// (flex by default); `on_event` sees [`QuantEvent::Calibrated`].
pub fn calibrate(
    ckpt: &Checkpoint,
    windows: &[Vec<u32>],
    on_event: &mut dyn FnMut(&QuantEvent),
) -> Result<Calibration> {
    let t0 = Instant::now();
    let c = Calibration::collect(ckpt, windows, &CpuBackend::from_env()?.device())?;
    on_event(&QuantEvent::Calibrated {
        windows: c.windows,
        tokens: c.tokens,
        seconds: t0.elapsed().as_secs_f64(),
    });
    Ok(c)
}

/// Runs the stage: quantizes `input.ckpt` as `settings` say. Calibrates on `input.calib` when
/// [`QuantSettings::needs_calibration`]; QAT trains on `input.train` and validates on
/// `input.valid`. Errors: invalid settings, a quantized input, a method without what it needs.
pub fn run(
    input: &StageInput,
    settings: &QuantSettings,
    on_event: &mut dyn FnMut(&QuantEvent),
) -> Result<StageOutput> {
    let quant = settings.quant_config()?;
    let qat = settings.qat_settings()?;
    let calib = if settings.needs_calibration() {
        Some(calibrate(input.ckpt, input.calib, on_event)?)
    } else {
        None
    };
    let (checkpoint, report) = match qat {
        None => quantize_checkpoint(input.ckpt, &quant, calib.as_ref())?,
        Some(q) => {
            let cfg = q.config(quant, BTreeMap::new())?;
            let data = QatData {
                train: input.train,
                valid: input.valid,
                bos: input.bos,
                teacher: input.teacher,
            };
            qat_checkpoint(input.ckpt, &cfg, &data, calib.as_ref(), &mut |p| {
                on_event(&QuantEvent::Train(p.clone()))
            })?
        }
    };
    Ok(StageOutput { checkpoint, report })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GptqConfig, Method, SmallFormat};
    use squish_core::checkpoint::TensorData;
    use squish_core::config::{ModelConfig, SsmMoeConfig};
    use squish_core::model::ssm_moe_weights::init_weights;

    /// configs/phase7.toml's `[stages.int4_native.quant]`.
    const PHASE7: &str = r#"
bits = 4
group = 64
method = "qat"
small = "f16"
[qat]
init = "mse"
[qat.train]
steps = 200
batch_size = 8
seq_len = 512
lr = 1e-3
min_lr = 1e-4
warmup_steps = 8
weight_decay = 0.0
distill_alpha = 1.0
eval_chunks = 8
seed = 1
"#;

    /// A tiny random SsmMoe (`dt_proj` rows 2 wide, experts 16 wide).
    fn tiny() -> Checkpoint {
        let c: SsmMoeConfig = toml::from_str("d_model = 16\nn_layers = 1\nvocab_size = 32\nseq_len = 64\nd_inner = 32\nd_state = 4\nd_conv = 4\ndt_rank = 2\nn_experts = 2\ntop_k = 1\nexpert_hidden = 16").unwrap();
        Checkpoint {
            config: ModelConfig::SsmMoe(c.clone()),
            weights: init_weights(&c, 3).unwrap(),
            provenance: Default::default(),
            metrics: Default::default(),
            tokenizer: None,
        }
    }

    fn tokens() -> Vec<u32> {
        (0..2048u32).map(|i| 1 + (i * 7 + i / 5) % 31).collect()
    }

    #[test]
    fn phase7_table_parses_and_keeps_its_serialization() {
        let s: QuantSettings = toml::from_str(PHASE7).unwrap();
        assert_eq!(s.method, QuantMethod::Qat);
        assert_eq!(s.small, SmallFormat::F16);
        assert_eq!(s.gptq, GptqConfig::default());
        assert!(
            s.needs_calibration(),
            "mse scales are weighted by calibration"
        );
        // The QAT export's config hash records GPTQ with default parameters, as it always has.
        assert_eq!(
            s.quant_config().unwrap().method,
            Method::Gptq(GptqConfig::default())
        );
        // Defaults are not written out: the settings serialize as they did before the fields
        // for the command line's GPTQ/MSE/AWQ flags existed.
        let v = serde_json::to_value(&s).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "asym",
                "bits",
                "group",
                "method",
                "qat",
                "quantize_embedding",
                "small"
            ]
        );
        assert_eq!(v["method"], "qat");
        assert_eq!(serde_json::from_value::<QuantSettings>(v).unwrap(), s);
        assert!(toml::from_str::<QuantSettings>("bits = 4\nmethod = \"awq\"").is_err());
        assert!(toml::from_str::<QuantSettings>("bits = 4\ngroupp = 3").is_err());
    }

    #[test]
    fn the_qat_table_goes_with_the_qat_method_only() {
        let mut s: QuantSettings = toml::from_str(PHASE7).unwrap();
        s.method = QuantMethod::Gptq;
        let e = s.qat_settings().unwrap_err().to_string();
        assert!(e.contains("only with method = \"qat\""), "{e}");
        s.method = QuantMethod::Qat;
        s.qat = None;
        let e = s.qat_settings().unwrap_err().to_string();
        assert!(e.contains("needs a [..quant.qat] table"), "{e}");
        let rtn: QuantSettings = toml::from_str("method = \"rtn\"").unwrap();
        assert!(!rtn.needs_calibration());
        assert!(rtn.qat_settings().unwrap().is_none());
        assert_eq!(QuantMethod::parse("mse").unwrap(), QuantMethod::Mse);
        assert!(QuantMethod::parse("awq").is_err());
    }

    /// GPTQ g32 on a model whose `dt_proj` rows are 2 wide: every linear weight is quantized,
    /// the narrow ones with one group per row, and the report lists them as quantized.
    #[test]
    fn ptq_quantizes_narrow_rows_per_row_and_calibrates_once() {
        let ckpt = tiny();
        let toks = tokens();
        let calib: Vec<Vec<u32>> = toks.chunks(64).take(4).map(<[u32]>::to_vec).collect();
        let input = StageInput {
            ckpt: &ckpt,
            calib: &calib,
            train: &toks,
            valid: &toks,
            bos: 1,
            teacher: None,
        };
        let s: QuantSettings = toml::from_str("bits = 4\ngroup = 32\nmethod = \"gptq\"").unwrap();
        let mut events = Vec::new();
        let out = run(&input, &s, &mut |e| events.push(e.clone())).unwrap();
        assert!(matches!(
            events.as_slice(),
            [QuantEvent::Calibrated {
                windows: 4,
                tokens: 256,
                ..
            }]
        ));
        let dt = "layers.0.ssm.dt_proj.weight";
        match &out.checkpoint.weights.get(dt).unwrap().data {
            TensorData::Quant(q) => assert_eq!((q.cols, q.group), (2, 2)),
            other => panic!("{dt} not quantized: {other:?}"),
        }
        let row = out.report.tensors.iter().find(|t| t.name == dt).unwrap();
        assert_eq!(row.group, 2);
        assert!(row.rel_output_error.is_some());
        assert!(out.report.kept.iter().all(|k| k.name != dt));
        for (name, t) in out.checkpoint.weights.iter() {
            if crate::pipeline::is_linear_weight(name) && t.shape.len() == 2 {
                assert!(matches!(t.data, TensorData::Quant(_)), "{name} kept");
            }
        }
    }

    /// `method = "qat"` with minmax scales and F32 latents needs no calibration; every training
    /// step reaches `on_event`, and the export says it is QAT.
    #[test]
    fn qat_reports_each_step() {
        let ckpt = tiny();
        let toks = tokens();
        let input = StageInput {
            ckpt: &ckpt,
            calib: &[],
            train: &toks,
            valid: &toks[..512],
            bos: 1,
            teacher: None,
        };
        let s: QuantSettings = toml::from_str(
            "group = 16\nmethod = \"qat\"\n[qat]\ninit = \"f32\"\nscales = { kind = \"minmax\" }\n\
             [qat.train]\nsteps = 3\nbatch_size = 2\nseq_len = 32\nlr = 1e-3\ndistill_alpha = 1.0\n\
             eval_chunks = 1",
        )
        .unwrap();
        assert!(!s.needs_calibration());
        let mut steps = Vec::new();
        let out = run(&input, &s, &mut |e| match e {
            QuantEvent::Train(p) => steps.push(p.step),
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
        assert_eq!(steps, [1, 2, 3]);
        assert_eq!(out.report.method, "qat");
        assert_eq!(out.report.qat.as_ref().unwrap().steps, 3);
        assert_eq!(out.checkpoint.provenance.details["method"], "qat");
    }
}
