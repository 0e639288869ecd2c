//! What the stage is asked for: the [`Budget`], the [`CandidateFormat`]s, and [`MixedConfig`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use squish_core::{Error, Result};
use squish_quant::QuantFormat;

/// The constraint the allocation honours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// File bytes on disk (`checkpoint::to_bytes` of the result) ≤ N.
    Bytes(u64),
    /// File bytes × 8 / (parameters of the input) ≤ B.
    BitsPerParam(f64),
    /// Fewest file bytes whose predicted perplexity increase is ≤ P percent (the dual problem).
    MaxDppl(f64),
}

impl Budget {
    /// The byte limit for a model of `params` parameters (`None` for [`Budget::MaxDppl`]).
    pub fn byte_limit(&self, params: usize) -> Option<u64> {
        match *self {
            Budget::Bytes(n) => Some(n),
            Budget::BitsPerParam(b) => Some((b * params as f64 / 8.0).floor().max(0.0) as u64),
            Budget::MaxDppl(_) => None,
        }
    }

    /// Checks the numbers (finite, positive).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Budget::Bytes(0) => Err(Error::invalid("byte budget must be > 0")),
            Budget::BitsPerParam(b) if !(b.is_finite() && b > 0.0) => Err(Error::invalid(format!(
                "bits/param budget must be a positive number, got {b}"
            ))),
            Budget::MaxDppl(p) if !(p.is_finite() && p >= 0.0) => Err(Error::invalid(format!(
                "max ΔPPL must be a non-negative percentage, got {p}"
            ))),
            _ => Ok(()),
        }
    }

    /// A short human label (`174376 B`, `3.5 bits/param`, `ΔPPL ≤ 3 %`).
    pub fn label(&self) -> String {
        match *self {
            Budget::Bytes(n) => format!("{n} B"),
            Budget::BitsPerParam(b) => format!("{b} bits/param"),
            Budget::MaxDppl(p) => format!("ΔPPL ≤ {p} %"),
        }
    }
}

/// One storage format a tensor may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateFormat {
    /// Keep 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// Packed integer codes (squish-quant's formats: 4 or 8 bits, group or per-row, sym/asym).
    Int {
        /// 4 or 8.
        bits: u32,
        /// Group size along the input dimension; `None` = per row.
        group: Option<usize>,
        /// Asymmetric (U8 zero points).
        asym: bool,
    },
    /// A learned codebook of `2^bits` levels per tensor with log8 group scales
    /// (`squish_core::codebook`; levels by weighted Lloyd-Max, codes by GPTQ or nearest).
    Codebook {
        /// 2, 3 or 4.
        bits: u32,
        /// Group size along the input dimension; `None` = per row.
        group: Option<usize>,
    },
}

impl CandidateFormat {
    /// The squish-quant format of an integer candidate (`None` for F32/F16 and codebooks).
    pub fn quant_format(&self) -> Result<Option<QuantFormat>> {
        match *self {
            CandidateFormat::Int { bits, group, asym } => {
                Ok(Some(QuantFormat::new(bits, group, asym)?))
            }
            CandidateFormat::Codebook { bits, group } => {
                squish_core::codebook::check_bits(bits)?;
                if group == Some(0) {
                    return Err(Error::invalid("codebook candidate with group 0"));
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// `f32`, `f16`, squish-quant's label (`int4-g32-asym`, `int8-row-sym`) or a codebook's
    /// (`cb3-g64`, `cb2-row`).
    pub fn label(&self) -> String {
        let g = |group: Option<usize>| group.map_or("row".to_string(), |g| format!("g{g}"));
        match *self {
            CandidateFormat::F32 => "f32".into(),
            CandidateFormat::F16 => "f16".into(),
            CandidateFormat::Int { bits, group, asym } => {
                format!(
                    "int{bits}-{}-{}",
                    g(group),
                    if asym { "asym" } else { "sym" }
                )
            }
            CandidateFormat::Codebook { bits, group } => format!("cb{bits}-{}", g(group)),
        }
    }

    /// Parses a [`CandidateFormat::label`]: `f32`, `f16`, `int{4,8}-{gN,row}-{sym,asym}`,
    /// `cb{2,3,4}-{gN,row}`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "unknown candidate format `{s}` (f32, f16, int4-g32-asym, int8-row-sym, cb3-g64, …)"
            ))
        };
        let group_of = |g: &str| -> Result<Option<usize>> {
            match g {
                "row" => Ok(None),
                g => Ok(Some(
                    g.strip_prefix('g')
                        .and_then(|n| n.parse::<usize>().ok())
                        .filter(|&n| n > 0)
                        .ok_or_else(bad)?,
                )),
            }
        };
        match s {
            "f32" => return Ok(CandidateFormat::F32),
            "f16" => return Ok(CandidateFormat::F16),
            _ => {}
        }
        if let Some((b, g)) = s.split_once('-')
            && let Some(bits) = b.strip_prefix("cb")
        {
            let bits = match bits {
                "2" => 2,
                "3" => 3,
                "4" => 4,
                _ => return Err(bad()),
            };
            return Ok(CandidateFormat::Codebook {
                bits,
                group: group_of(g)?,
            });
        }
        let parts: Vec<&str> = s.split('-').collect();
        let [b, g, a] = parts.as_slice() else {
            return Err(bad());
        };
        let bits = match *b {
            "int4" => 4,
            "int8" => 8,
            _ => return Err(bad()),
        };
        let group = group_of(g)?;
        let asym = match *a {
            "sym" => false,
            "asym" => true,
            _ => return Err(bad()),
        };
        Ok(CandidateFormat::Int { bits, group, asym })
    }

    /// True for an integer format with `bits` bits.
    pub fn is_int(&self, want: u32) -> bool {
        matches!(*self, CandidateFormat::Int { bits, .. } if bits == want)
    }
}

/// The default candidate list: F16, INT8 per-row / g64 (sym), INT4 g32 / g64 / per-row (sym and
/// asym).
pub fn default_candidates() -> Vec<CandidateFormat> {
    let int = |bits, group, asym| CandidateFormat::Int { bits, group, asym };
    vec![
        CandidateFormat::F16,
        int(8, None, false),
        int(8, Some(64), false),
        int(4, Some(32), false),
        int(4, Some(32), true),
        int(4, Some(64), false),
        int(4, Some(64), true),
        int(4, None, false),
        int(4, None, true),
    ]
}

/// The codebook candidates: 2-, 3- and 4-bit learned codebooks in groups of 64 (log8 scales) —
/// what extends the frontier below 4 bits/param. Not in [`default_candidates`] (the pipeline's
/// mixed stage keeps its integer formats unless configured); `cargo xtask mixed` adds them.
pub fn codebook_candidates() -> Vec<CandidateFormat> {
    (2..=4)
        .map(|bits| CandidateFormat::Codebook {
            bits,
            group: Some(64),
        })
        .collect()
}

/// What the allocation minimises (per tensor and candidate, measured on the calibration windows
/// with only that tensor changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Increase of the next-token loss (nats/token) on the calibration windows; negative
    /// measurements are clamped to 0. Noisy for small changes (its sign flips between tensors
    /// of similar damage), so the DP exploits the noise; measured worse than KL.
    DeltaNats,
    /// Mean KL(F32 ‖ candidate) per token: always ≥ 0, far less noisy, and the expected loss
    /// increase when the F32 model's distribution is right (the default).
    #[default]
    Kl,
}

/// Settings of [`crate::mixed_checkpoint`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixedConfig {
    /// The constraint (bytes, bits/param, or max ΔPPL %).
    pub budget: Budget,
    /// Formats a quantizable (2-D linear / embedding) tensor may get.
    pub candidates: Vec<CandidateFormat>,
    /// Calibration windows (of `MixedData::calib`) used for the sensitivity runs.
    pub calib_windows: usize,
    /// Directory of the JSON sensitivity cache (`None` = no cache).
    pub cache_dir: Option<PathBuf>,
    /// Mixed points on the Pareto frontier (besides the chosen one and the uniform points).
    pub frontier_points: usize,
    /// What the allocation minimises.
    pub objective: Objective,
    /// Also let the small tensors (norms, SSM vectors) choose F16 instead of F32.
    pub small_f16: bool,
    /// Quantize with GPTQ when statistics are given (the method with the lower layer-output
    /// error of GPTQ and weighted MSE is kept); without statistics MSE and RTN compete.
    pub gptq: bool,
    /// Context of the measured perplexity (llama-cpp protocol).
    pub eval_ctx: usize,
    /// Measure the perplexity of every frontier and uniform point (else only the chosen mix).
    pub measure_frontier: bool,
    /// Worker threads for the sensitivity runs.
    pub threads: usize,
    /// Largest DP table width (byte units); above it the byte unit grows (then not exact).
    pub dp_max_states: usize,
    /// Re-solves allowed to bring the real file size under the budget / the measured ΔPPL under
    /// the target.
    pub max_resolves: usize,
}

impl Default for MixedConfig {
    fn default() -> Self {
        MixedConfig {
            budget: Budget::BitsPerParam(5.0),
            candidates: default_candidates(),
            calib_windows: 32,
            cache_dir: None,
            frontier_points: 8,
            objective: Objective::default(),
            small_f16: true,
            gptq: true,
            eval_ctx: 256,
            measure_frontier: true,
            threads: 1,
            dp_max_states: 1 << 20,
            max_resolves: 6,
        }
    }
}

impl MixedConfig {
    /// Checks the settings; errors name the bad field.
    pub fn validate(&self) -> Result<()> {
        self.budget.validate()?;
        if self.candidates.is_empty() {
            return Err(Error::invalid(
                "mixed precision needs at least one candidate format",
            ));
        }
        for c in &self.candidates {
            c.quant_format()?;
        }
        if self.calib_windows == 0 {
            return Err(Error::invalid("calib_windows must be ≥ 1"));
        }
        if self.dp_max_states < 16 {
            return Err(Error::invalid("dp_max_states must be ≥ 16"));
        }
        Ok(())
    }

    /// SHA-256 of the settings that decide the written file (the provenance's `config_hash`):
    /// the config without the knobs that only change speed or what else gets measured —
    /// `threads`, `cache_dir`, `measure_frontier`, `frontier_points` — so the same settings give
    /// the same checkpoint bytes for any thread count or cache location.
    pub fn result_hash(&self) -> Result<String> {
        let canonical = MixedConfig {
            threads: 1,
            cache_dir: None,
            measure_frontier: true,
            frontier_points: 0,
            ..self.clone()
        };
        let json = serde_json::to_vec(&canonical).map_err(|e| Error::invalid(e.to_string()))?;
        Ok(squish_core::fsutil::sha256_hex(&json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_hash_ignores_speed_and_measurement_knobs_only() {
        let base = MixedConfig::default();
        let h = base.result_hash().unwrap();
        let same = MixedConfig {
            threads: 4,
            cache_dir: Some("elsewhere".into()),
            measure_frontier: false,
            frontier_points: 3,
            ..base.clone()
        };
        assert_eq!(same.result_hash().unwrap(), h);
        let other = MixedConfig {
            calib_windows: 16,
            ..base.clone()
        };
        assert_ne!(other.result_hash().unwrap(), h);
        let other = MixedConfig {
            budget: Budget::BitsPerParam(3.5),
            ..base
        };
        assert_ne!(other.result_hash().unwrap(), h);
    }

    #[test]
    fn labels_round_trip_and_bad_labels_are_errors() {
        for c in default_candidates()
            .into_iter()
            .chain(codebook_candidates())
        {
            assert_eq!(CandidateFormat::parse(&c.label()).unwrap(), c);
        }
        assert_eq!(
            CandidateFormat::parse("cb2-row").unwrap(),
            CandidateFormat::Codebook {
                bits: 2,
                group: None
            }
        );
        for bad in [
            "cb5-g64",
            "cb3-g0",
            "cb3",
            "cb3-g64-sym",
            "int3-g32-sym",
            "int4-g0-sym",
            "int4-32-sym",
            "int4-g32",
            "q4",
        ] {
            assert!(CandidateFormat::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_json_round_trips_and_rejects_unknown_fields() {
        let c = MixedConfig {
            budget: Budget::Bytes(1234),
            ..MixedConfig::default()
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<MixedConfig>(&s).unwrap(), c);
        assert!(serde_json::from_str::<MixedConfig>(r#"{"budgett": {"bytes": 3}}"#).is_err());
        let d: MixedConfig = serde_json::from_str(r#"{"budget": {"max_dppl": 3.0}}"#).unwrap();
        assert_eq!(d.budget, Budget::MaxDppl(3.0));
        assert!(Budget::BitsPerParam(-1.0).validate().is_err());
        assert_eq!(Budget::BitsPerParam(8.0).byte_limit(100), Some(100));
    }
}
