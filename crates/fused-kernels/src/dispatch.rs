//! Run-time selection of the SIMD code path.
//!
//! The best path the CPU supports is detected once (`is_x86_feature_detected!`);
//! the environment variable `SQUISH_SIMD=scalar|avx2|avx512|neon` can force a
//! lower (never a higher) path. Every kernel entry point also accepts an explicit
//! [`SimdLevel`] which is clamped to what the hardware supports, so tests can
//! exercise each present path without touching the environment.

use std::sync::OnceLock;

/// A kernel implementation family, ordered from slowest to fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    /// Portable scalar reference code (ground truth for the tests).
    Scalar,
    /// aarch64 NEON (only on aarch64; treated as above scalar).
    Neon,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX-512 F/BW/VL (+ VNNI for int8-activation kernels when present).
    Avx512,
}

impl SimdLevel {
    /// Every level, slowest first.
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Scalar,
        SimdLevel::Neon,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
    ];

    /// Lower-case name as accepted by `SQUISH_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Neon => "neon",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        }
    }

    /// Parses a `SQUISH_SIMD` value (case-insensitive).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(SimdLevel::Scalar),
            "neon" => Some(SimdLevel::Neon),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" => Some(SimdLevel::Avx512),
            _ => None,
        }
    }

    /// True if this machine can run the level.
    pub fn is_supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            SimdLevel::Neon => neon_supported(),
            SimdLevel::Avx2 => avx2_supported(),
            SimdLevel::Avx512 => avx512_supported(),
        }
    }

    /// Levels this machine supports, slowest first.
    pub fn supported() -> Vec<SimdLevel> {
        SimdLevel::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    /// The best level the hardware supports (ignores `SQUISH_SIMD`).
    pub fn detect() -> SimdLevel {
        *SimdLevel::ALL
            .iter()
            .rev()
            .find(|l| l.is_supported())
            .unwrap_or(&SimdLevel::Scalar)
    }

    /// The level used by default: [`SimdLevel::detect`] lowered by `SQUISH_SIMD`
    /// if set. Computed once per process.
    pub fn active() -> SimdLevel {
        static ACTIVE: OnceLock<SimdLevel> = OnceLock::new();
        *ACTIVE.get_or_init(|| {
            let env = std::env::var("SQUISH_SIMD")
                .ok()
                .and_then(|s| SimdLevel::parse(&s));
            SimdLevel::clamp(env.unwrap_or(SimdLevel::Avx512))
        })
    }

    /// The best supported level that is `<= want`.
    pub fn clamp(want: SimdLevel) -> SimdLevel {
        *SimdLevel::ALL
            .iter()
            .rev()
            .find(|l| **l <= want && l.is_supported())
            .unwrap_or(&SimdLevel::Scalar)
    }

    /// Resolves an optional explicit request: `None` means [`SimdLevel::active`].
    pub fn resolve(want: Option<SimdLevel>) -> SimdLevel {
        match want {
            None => SimdLevel::active(),
            Some(w) => SimdLevel::clamp(w),
        }
    }
}

/// True if the int8-activation AVX-512 kernels can use VNNI (`vpdpbusd`).
pub fn vnni_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512_supported() && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx2_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx512_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2_supported()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn neon_supported() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("neon")
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}
