//! The quantization stage's settings: [`QuantSettings`] (the TOML table `[stages.<name>.quant]`
//! deserializes into it; `cargo xtask quantize` maps its flags onto it), its [`QuantMethod`] and
//! the QAT table [`QatSettings`]; each maps onto the library configs ([`QuantConfig`],
//! [`QatConfig`]) the stage ([`crate::stage`]) runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use squish_core::codebook::CbScales;
use squish_core::model::CpuBackend;
use squish_core::train::TrainConfig;
use squish_core::{Error, Result};

use crate::awq::AwqConfig;
use crate::codebook::{CodebookMode, CodebookSpec};
use crate::gptq::GptqConfig;
use crate::mse::MseConfig;
use crate::pipeline::{QuantConfig, SmallFormat};
use crate::qat::{QatConfig, QatInit, QatScales};
use crate::spec::{Method, QuantFormat};

/// How the stage chooses the codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantMethod {
    /// Round-to-nearest, min-max scales.
    Rtn,
    /// Per-group clipping search ([`QuantSettings::mse`]).
    Mse,
    /// GPTQ ([`QuantSettings::gptq`]; the default).
    #[default]
    Gptq,
    /// Quantization-aware training ([`QuantSettings::qat`]).
    Qat,
}

impl QuantMethod {
    /// `rtn`, `mse`, `gptq` or `qat`.
    pub fn name(self) -> &'static str {
        match self {
            QuantMethod::Rtn => "rtn",
            QuantMethod::Mse => "mse",
            QuantMethod::Gptq => "gptq",
            QuantMethod::Qat => "qat",
        }
    }

    /// Parses [`QuantMethod::name`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "rtn" => Ok(QuantMethod::Rtn),
            "mse" => Ok(QuantMethod::Mse),
            "gptq" => Ok(QuantMethod::Gptq),
            "qat" => Ok(QuantMethod::Qat),
            other => Err(Error::invalid(format!(
                "quantization method `{other}`: expected rtn, mse, gptq or qat"
            ))),
        }
    }
}

/// The stage's settings: `[stages.<name>.quant]` of a pipeline config (also `[stages.pruned.int4]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuantSettings {
    /// 4 or 8.
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// Group size along the input dimension; 0 = one group per row. Rows narrower than the group
    /// get one group per row ([`QuantFormat::fitted`]).
    #[serde(default = "default_group")]
    pub group: usize,
    /// Asymmetric (zero points).
    #[serde(default)]
    pub asym: bool,
    /// `rtn`, `mse`, `gptq` (post-training) or `qat`.
    #[serde(default)]
    pub method: QuantMethod,
    /// Quantize the embedding / classifier too.
    #[serde(default = "default_true")]
    pub quantize_embedding: bool,
    /// Storage of the small tensors (norms, SSM A_log/D/conv/dt bias): `f32` or `f16`.
    #[serde(default)]
    pub small: SmallFormat,
    /// AWQ scaling before post-training quantization (needs calibration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awq: Option<AwqConfig>,
    /// GPTQ parameters (`method = "gptq"`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub gptq: GptqConfig,
    /// Clipping-search parameters (`method = "mse"`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub mse: MseConfig,
    /// QAT fine-tuning (`[...quant.qat]`), required by `method = "qat"` and read by it only.
    #[serde(default)]
    pub qat: Option<QatSettings>,
    /// `none` (the integer grid, default), `tensor` (a learned codebook of `2^bits` levels per
    /// tensor) or `uniform` (the codebook format holding the integer grid); `bits` 2, 3 or 4,
    /// symmetric, methods `rtn`, `gptq` ([`crate::codebook`]) or `qat` with `tensor` (levels and
    /// scales trained, [`crate::qat_codebook`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub codebook: CodebookMode,
    /// A codebook's scale storage: `log8` (default: one byte per group on a log grid, F16
    /// levels) or `f16` (F16 scales, F32 levels) ([`CbScales`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub codebook_scales: CbScales,
}

/// Quantization-aware training: fake-quant + straight-through estimator, distillation from the
/// F32 model, export on the same grid ([`crate::qat_checkpoint`]). Also the mixed-precision
/// stage's QAT of its chosen mix (`[stages.mixed_precision.qat]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QatSettings {
    /// Training (`distill_alpha = 1.0` = pure KL to the F32 teacher).
    pub train: TrainConfig,
    /// Latent starting point: `f32`, `rtn`, `mse`, `gptq`.
    #[serde(default)]
    pub init: QatInit,
    /// Scale rule at every step and at export.
    #[serde(default)]
    pub scales: QatScales,
    /// Oscillation dampening of codebook tensors ([`QatConfig::dampen`]); 0 = off.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dampen: f32,
}

fn default_bits() -> u32 {
    4
}
fn default_group() -> usize {
    32
}
fn default_true() -> bool {
    true
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl QatSettings {
    /// Whether QAT needs calibration statistics: GPTQ-initialised latents, or scales chosen by
    /// the (activation-weighted) clipping search.
    pub fn needs_calibration(&self) -> bool {
        self.init == QatInit::Gptq
            || matches!(self.scales, QatScales::Mse(_) | QatScales::Learned(_))
    }

    /// The QAT configuration of these settings: `quant` gives the default format and tensor
    /// selection, `per_tensor` the overrides; the backend comes from `SQUISH_BACKEND`.
    pub fn config(
        &self,
        quant: QuantConfig,
        per_tensor: BTreeMap<String, Option<QuantFormat>>,
    ) -> Result<QatConfig> {
        Ok(QatConfig {
            quant,
            per_tensor,
            per_tensor_codebook: BTreeMap::new(),
            train: self.train.clone(),
            init: self.init,
            scales: self.scales.clone(),
            backend: CpuBackend::from_env()?,
            dampen: self.dampen,
        })
    }
}

impl QuantSettings {
    /// The target format (`group = 0` = per row).
    /// With a codebook the format only carries the group (its bits are 4, unused).
    pub fn format(&self) -> Result<QuantFormat> {
        let group = (self.group > 0).then_some(self.group);
        match self.codebook {
            CodebookMode::None => QuantFormat::new(self.bits, group, self.asym),
            CodebookMode::Tensor | CodebookMode::Uniform => {
                squish_core::codebook::check_bits(self.bits)?;
                if self.asym {
                    return Err(Error::invalid(
                        "codebook formats are symmetric: drop asym with codebook = \"tensor\"",
                    ));
                }
                if self.method == QuantMethod::Mse {
                    return Err(Error::invalid(
                        "codebook formats run with method rtn, gptq or qat, not mse (the \
                         codebook's scales are absmax and its levels fit by Lloyd-Max)",
                    ));
                }
                if self.method == QuantMethod::Qat && self.codebook == CodebookMode::Uniform {
                    return Err(Error::invalid(
                        "QAT trains the levels of a codebook: use codebook = \"tensor\" (a \
                         fixed uniform codebook is the integer grid, codebook = \"none\")",
                    ));
                }
                QuantFormat::new(4, group, false)
            }
        }
    }

    /// The whole-checkpoint configuration these settings describe. For `qat` the method is
    /// recorded as GPTQ with [`QuantSettings::gptq`] (QAT chooses its grid by `qat.scales`; the
    /// method only enters the configuration hash of the export).
    pub fn quant_config(&self) -> Result<QuantConfig> {
        let method = match self.method {
            QuantMethod::Rtn => Method::Rtn,
            QuantMethod::Mse => Method::Mse(self.mse.clone()),
            QuantMethod::Gptq | QuantMethod::Qat => Method::Gptq(self.gptq.clone()),
        };
        let mut c = QuantConfig::new(self.format()?, method);
        c.awq = self.awq.clone(); // QAT refuses it (`qat::build_plan`)
        c.quantize_embedding = self.quantize_embedding;
        c.small = self.small;
        c.codebook = match self.codebook {
            CodebookMode::None => None,
            mode => Some(CodebookSpec {
                bits: self.bits,
                learned: mode == CodebookMode::Tensor,
                scales: self.codebook_scales,
            }),
        };
        Ok(c)
    }

    /// The QAT table, checked against the method: required by `qat`, refused otherwise (it would
    /// be silently ignored). `None` for post-training methods.
    pub fn qat_settings(&self) -> Result<Option<&QatSettings>> {
        match (self.method, &self.qat) {
            (QuantMethod::Qat, Some(q)) => Ok(Some(q)),
            (QuantMethod::Qat, None) => Err(Error::invalid(
                "method = \"qat\" needs a [..quant.qat] table with its training settings",
            )),
            (_, Some(_)) => Err(Error::invalid(format!(
                "a [..quant.qat] table is read only with method = \"qat\", not \"{}\"",
                self.method.name()
            ))),
            (_, None) => Ok(None),
        }
    }

    /// Whether the stage needs calibration statistics: GPTQ, weighted MSE, AWQ, a codebook, or QAT per
    /// [`QatSettings::needs_calibration`].
    pub fn needs_calibration(&self) -> bool {
        match self.method {
            QuantMethod::Gptq => true,
            QuantMethod::Mse => self.mse.weighted || self.awq.is_some(),
            // A codebook's levels are fit weighted by the inputs' second moments.
            QuantMethod::Rtn => self.awq.is_some() || self.codebook != CodebookMode::None,
            QuantMethod::Qat => {
                self.codebook != CodebookMode::None
                    || self
                        .qat
                        .as_ref()
                        .is_some_and(QatSettings::needs_calibration)
            }
        }
    }
}
