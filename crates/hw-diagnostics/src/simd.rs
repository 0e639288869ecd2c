//! SIMD feature detection, the [`SimdLevel`] kernel-path ladder and the `SQUISH_SIMD` override.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Name of the environment variable that caps the SIMD path (`scalar` | `avx2` | `avx512` |
/// `avx512vnni` | `neon`; empty or `auto` means "no cap").
pub const SIMD_ENV_VAR: &str = "SQUISH_SIMD";

/// A kernel path the squish runtime can dispatch to.
///
/// On x86-64 the levels form the ladder `Scalar < Avx2 < Avx512 < Avx512Vnni`; on aarch64 it is
/// `Scalar < Neon`. Forcing a level (via [`SIMD_ENV_VAR`] or
/// [`ProbeOptions::force`](crate::ProbeOptions::force)) is a *cap*: the effective level is the
/// best detected level that is not above the cap. A cap from the other architecture (e.g. `neon`
/// on x86-64) can only be satisfied by `Scalar`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimdLevel {
    /// Portable Rust, no explicit intrinsics (the compiler may still auto-vectorise for the
    /// baseline target: SSE2 on x86-64, NEON on aarch64).
    Scalar,
    /// x86-64 AVX2 + FMA (256-bit); INT8 via `vpmaddubsw`+`vpmaddwd`, or AVX-VNNI when present.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL (512-bit); INT8 via `vpmaddubsw`+`vpmaddwd`.
    Avx512,
    /// x86-64 AVX-512 F/BW/VL + VNNI; INT8 via `vpdpbusd`.
    Avx512Vnni,
    /// aarch64 Advanced SIMD (128-bit).
    Neon,
}

impl SimdLevel {
    /// Stable lowercase name, as used in JSON and by [`SIMD_ENV_VAR`].
    pub fn as_str(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Avx512Vnni => "avx512vnni",
            SimdLevel::Neon => "neon",
        }
    }

    /// Parses a level name (case-insensitive; `-`/`_` ignored, so `avx512-vnni` works).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        let norm: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        match norm.as_str() {
            "scalar" | "none" | "portable" => Some(SimdLevel::Scalar),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" => Some(SimdLevel::Avx512),
            "avx512vnni" | "vnni" => Some(SimdLevel::Avx512Vnni),
            "neon" => Some(SimdLevel::Neon),
            _ => None,
        }
    }

    /// All levels, lowest first.
    pub const ALL: [SimdLevel; 5] = [
        SimdLevel::Scalar,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
        SimdLevel::Avx512Vnni,
        SimdLevel::Neon,
    ];

    /// Position on its architecture's ladder (Scalar = 0).
    fn rank(self) -> u8 {
        match self {
            SimdLevel::Scalar => 0,
            SimdLevel::Avx2 | SimdLevel::Neon => 1,
            SimdLevel::Avx512 => 2,
            SimdLevel::Avx512Vnni => 3,
        }
    }

    fn is_x86(self) -> bool {
        matches!(
            self,
            SimdLevel::Avx2 | SimdLevel::Avx512 | SimdLevel::Avx512Vnni
        )
    }

    /// True if `self` is allowed under `cap` (same architecture ladder and not above it).
    pub fn within(self, cap: SimdLevel) -> bool {
        if self == SimdLevel::Scalar {
            return true;
        }
        if cap == SimdLevel::Scalar {
            return false;
        }
        self.is_x86() == cap.is_x86() && self.rank() <= cap.rank()
    }
}

impl fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runtime-detected CPU SIMD features, keyed by name.
///
/// x86-64 keys: `sse4.2`, `avx`, `avx2`, `fma`, `f16c`, `avx512f`, `avx512bw`, `avx512vl`,
/// `avx512vnni`, `avx512bf16`, `avx512fp16`, `avxvnni`, `amx_tile`, `amx_int8`, `amx_bf16`.
/// aarch64 keys: `neon`, `dotprod`, `i8mm`, `fp16`, `bf16`, `sve`, `sve2`.
/// Other architectures: empty map.
pub type SimdFeatures = BTreeMap<String, bool>;

/// Detects the SIMD features of the running CPU (cheap: `cpuid`/auxv based, cached by std).
pub fn detect_features() -> SimdFeatures {
    let mut m = SimdFeatures::new();
    detect_arch(&mut m);
    m
}

#[cfg(target_arch = "x86_64")]
fn detect_arch(m: &mut SimdFeatures) {
    let mut put = |k: &str, v: bool| {
        m.insert(k.to_string(), v);
    };
    put("sse4.2", is_x86_feature_detected!("sse4.2"));
    put("avx", is_x86_feature_detected!("avx"));
    put("avx2", is_x86_feature_detected!("avx2"));
    put("fma", is_x86_feature_detected!("fma"));
    put("f16c", is_x86_feature_detected!("f16c"));
    put("avx512f", is_x86_feature_detected!("avx512f"));
    put("avx512bw", is_x86_feature_detected!("avx512bw"));
    put("avx512vl", is_x86_feature_detected!("avx512vl"));
    put("avx512vnni", is_x86_feature_detected!("avx512vnni"));
    put("avx512bf16", is_x86_feature_detected!("avx512bf16"));
    put("avx512fp16", is_x86_feature_detected!("avx512fp16"));
    put("avxvnni", is_x86_feature_detected!("avxvnni"));
    let amx = amx_features(std::fs::read_to_string("/proc/cpuinfo").ok().as_deref());
    put("amx_tile", amx.0);
    put("amx_int8", amx.1);
    put("amx_bf16", amx.2);
}

/// AMX (tile, int8, bf16) support. AMX detection in `std` is unstable, so this reads CPUID leaf 7
/// EDX bits 24/25/22 and, when `/proc/cpuinfo` is readable, also requires the kernel to list the
/// flag (the kernel hides it when the OS has not enabled AMX state).
#[cfg(target_arch = "x86_64")]
pub(crate) fn amx_features(cpuinfo: Option<&str>) -> (bool, bool, bool) {
    let max_leaf = std::arch::x86_64::__cpuid(0).eax;
    let edx = if max_leaf >= 7 {
        std::arch::x86_64::__cpuid_count(7, 0).edx
    } else {
        0
    };
    let bit = |b: u32| edx & (1 << b) != 0;
    let cpuid = (bit(24), bit(25), bit(22));
    match cpuinfo.and_then(cpuinfo_flags) {
        Some(flags) => {
            let has = |f: &str| flags.iter().any(|x| x == f);
            (
                cpuid.0 && has("amx_tile"),
                cpuid.1 && has("amx_int8"),
                cpuid.2 && has("amx_bf16"),
            )
        }
        None => cpuid,
    }
}

/// The `flags` (x86) or `Features` (arm) list of the first CPU in a `/proc/cpuinfo` text
/// (`None` if there is no such line).
pub fn cpuinfo_flags(cpuinfo: &str) -> Option<Vec<String>> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        let k = k.trim();
        (k == "flags" || k == "Features").then(|| v.split_whitespace().map(String::from).collect())
    })
}

#[cfg(target_arch = "aarch64")]
fn detect_arch(m: &mut SimdFeatures) {
    use std::arch::is_aarch64_feature_detected as det;
    let mut put = |k: &str, v: bool| {
        m.insert(k.to_string(), v);
    };
    put("neon", det!("neon"));
    put("dotprod", det!("dotprod"));
    put("i8mm", det!("i8mm"));
    put("fp16", det!("fp16"));
    put("bf16", det!("bf16"));
    put("sve", det!("sve"));
    put("sve2", det!("sve2"));
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect_arch(_m: &mut SimdFeatures) {}

/// Best level the CPU supports, ignoring any override.
pub fn detected_simd_level() -> SimdLevel {
    level_from_features(&detect_features())
}

/// Maps a feature map to the best [`SimdLevel`] it supports.
pub fn level_from_features(f: &SimdFeatures) -> SimdLevel {
    let has = |k: &str| f.get(k).copied().unwrap_or(false);
    if has("avx512f") && has("avx512bw") && has("avx512vl") && has("fma") {
        if has("avx512vnni") {
            SimdLevel::Avx512Vnni
        } else {
            SimdLevel::Avx512
        }
    } else if has("avx2") && has("fma") {
        SimdLevel::Avx2
    } else if has("neon") {
        SimdLevel::Neon
    } else {
        SimdLevel::Scalar
    }
}

/// Levels the CPU supports, lowest first (always starts with `Scalar`).
pub fn supported_levels(detected: SimdLevel) -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.within(detected))
        .collect()
}

/// Best supported level that does not exceed `cap` (or `detected` when there is no cap).
pub fn apply_cap(detected: SimdLevel, cap: Option<SimdLevel>) -> SimdLevel {
    match cap {
        None => detected,
        Some(cap) => supported_levels(detected)
            .into_iter()
            .rev()
            .find(|l| l.within(cap))
            .unwrap_or(SimdLevel::Scalar),
    }
}

/// Result of interpreting a [`SIMD_ENV_VAR`] value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvCap {
    /// Variable unset, empty, or `auto`.
    None,
    /// A valid level.
    Cap(SimdLevel),
    /// Unrecognised value (ignored; the caller should warn).
    Invalid(String),
}

/// Interprets a `SQUISH_SIMD` value (pure; see [`simd_cap_from_env`] for the real variable).
pub fn parse_simd_env(value: Option<&str>) -> EnvCap {
    match value.map(str::trim) {
        None | Some("") => EnvCap::None,
        Some(v) if v.eq_ignore_ascii_case("auto") => EnvCap::None,
        Some(v) => SimdLevel::parse(v).map_or_else(|| EnvCap::Invalid(v.to_string()), EnvCap::Cap),
    }
}

/// Reads and interprets the `SQUISH_SIMD` environment variable.
pub fn simd_cap_from_env() -> EnvCap {
    let v = std::env::var(SIMD_ENV_VAR).ok();
    parse_simd_env(v.as_deref())
}

/// The kernel path the runtime should dispatch to: detection only (no benchmarks, cheap enough
/// to call per process start), capped by `SQUISH_SIMD` when set to a valid level. Invalid
/// values are ignored.
pub fn best_simd_level() -> SimdLevel {
    let cap = match simd_cap_from_env() {
        EnvCap::Cap(l) => Some(l),
        EnvCap::None | EnvCap::Invalid(_) => None,
    };
    apply_cap(detected_simd_level(), cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        for l in SimdLevel::ALL {
            assert_eq!(SimdLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(
            SimdLevel::parse(" AVX512-VNNI "),
            Some(SimdLevel::Avx512Vnni)
        );
        assert_eq!(SimdLevel::parse("sse9"), None);
    }

    #[test]
    fn env_parsing() {
        assert_eq!(parse_simd_env(None), EnvCap::None);
        assert_eq!(parse_simd_env(Some(" ")), EnvCap::None);
        assert_eq!(parse_simd_env(Some("Auto")), EnvCap::None);
        assert_eq!(
            parse_simd_env(Some("scalar")),
            EnvCap::Cap(SimdLevel::Scalar)
        );
        assert_eq!(
            parse_simd_env(Some("bogus")),
            EnvCap::Invalid("bogus".into())
        );
    }

    #[test]
    fn caps() {
        use SimdLevel::*;
        assert_eq!(apply_cap(Avx512Vnni, Some(Avx2)), Avx2);
        assert_eq!(apply_cap(Avx2, Some(Avx512)), Avx2);
        assert_eq!(apply_cap(Avx2, Some(Scalar)), Scalar);
        assert_eq!(apply_cap(Avx2, Some(Neon)), Scalar);
        assert_eq!(apply_cap(Neon, Some(Avx2)), Scalar);
        assert_eq!(apply_cap(Neon, None), Neon);
        assert_eq!(supported_levels(Avx512), vec![Scalar, Avx2, Avx512]);
        assert_eq!(supported_levels(Scalar), vec![Scalar]);
    }

    #[test]
    fn levels_from_feature_maps() {
        let mk =
            |ks: &[&str]| -> SimdFeatures { ks.iter().map(|k| (k.to_string(), true)).collect() };
        assert_eq!(level_from_features(&mk(&[])), SimdLevel::Scalar);
        assert_eq!(level_from_features(&mk(&["avx2"])), SimdLevel::Scalar);
        assert_eq!(level_from_features(&mk(&["avx2", "fma"])), SimdLevel::Avx2);
        assert_eq!(
            level_from_features(&mk(&["avx2", "fma", "avx512f", "avx512bw", "avx512vl"])),
            SimdLevel::Avx512
        );
        assert_eq!(
            level_from_features(&mk(&[
                "avx2",
                "fma",
                "avx512f",
                "avx512bw",
                "avx512vl",
                "avx512vnni"
            ])),
            SimdLevel::Avx512Vnni
        );
        assert_eq!(level_from_features(&mk(&["neon"])), SimdLevel::Neon);
    }

    #[test]
    fn cpuinfo_flag_parsing() {
        let t = "processor\t: 0\nflags\t\t: fpu avx2 amx_tile\n\nflags : other\n";
        assert_eq!(
            cpuinfo_flags(t).unwrap(),
            vec!["fpu".to_string(), "avx2".into(), "amx_tile".into()]
        );
        assert_eq!(cpuinfo_flags("garbage\n\0\n"), None);
    }
}
