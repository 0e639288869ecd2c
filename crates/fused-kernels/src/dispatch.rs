//! Run-time selection of the SIMD code path, on squish-hwdiag's [`SimdLevel`] ladder.
//!
//! squish-hwdiag owns the level type, the CPU detection and the `SQUISH_SIMD` parser (a cap,
//! never a raise: [`squish_hwdiag::best_simd_level`]). This module lowers those levels to what
//! these kernels can run (their `#[target_feature]` sets also need F16C) and caches the result.
//! Every kernel entry point also accepts an explicit level, clamped to the hardware by
//! [`clamp`], so tests can exercise each present path without touching the environment.
//!
//! Kernel paths per level: `Scalar` (reference), `Neon` (aarch64), `Avx2`, `Avx512` (AVX-512
//! float kernels; int8-activation kernels on the AVX2 code) and `Avx512Vnni` (as `Avx512`, with
//! `vpdpbusd` int8-activation kernels).

use std::sync::OnceLock;

pub use squish_hwdiag::SimdLevel;

/// The best level these kernels can run on this CPU (hwdiag's detection, lowered to the kernels'
/// own feature requirements; ignores `SQUISH_SIMD`). Computed once per process.
pub fn detect() -> SimdLevel {
    static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let hw = squish_hwdiag::simd::detected_simd_level();
        SimdLevel::ALL
            .into_iter()
            .rev()
            .find(|l| l.within(hw) && runnable(*l))
            .unwrap_or(SimdLevel::Scalar)
    })
}

/// Levels this machine runs, lowest first (always starts with `Scalar`).
pub fn supported() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.within(detect()))
        .collect()
}

/// The best supported level that does not exceed `want` (allocation-free).
pub fn clamp(want: SimdLevel) -> SimdLevel {
    let best = detect();
    SimdLevel::ALL
        .into_iter()
        .rev()
        .find(|l| l.within(want) && l.within(best))
        .unwrap_or(SimdLevel::Scalar)
}

/// The level used by default: [`detect`] capped by `SQUISH_SIMD` as squish-hwdiag reads it
/// ([`squish_hwdiag::best_simd_level`]; invalid values are ignored). Computed once per process.
pub fn active() -> SimdLevel {
    static ACTIVE: OnceLock<SimdLevel> = OnceLock::new();
    *ACTIVE.get_or_init(|| clamp(squish_hwdiag::best_simd_level()))
}

/// Resolves an optional explicit request: `None` means [`active`], `Some` is [`clamp`]ed.
pub fn resolve(want: Option<SimdLevel>) -> SimdLevel {
    match want {
        None => active(),
        Some(w) => clamp(w),
    }
}

/// True if `level` (a resolved level) runs the AVX2+FMA+F16C code, i.e. any x86 SIMD level.
pub(crate) fn has_avx2(level: SimdLevel) -> bool {
    cfg!(target_arch = "x86_64") && SimdLevel::Avx2.within(level)
}

/// True if the CPU has every target feature the kernels of `level` enable (cumulative: a level
/// that is runnable implies every lower level on its ladder is).
fn runnable(level: SimdLevel) -> bool {
    match level {
        SimdLevel::Scalar => true,
        SimdLevel::Neon => neon_features(),
        SimdLevel::Avx2 => avx2_features(),
        SimdLevel::Avx512 => avx2_features() && avx512_features(),
        SimdLevel::Avx512Vnni => avx2_features() && avx512_features() && vnni_feature(),
    }
}

/// True if the CPU has AVX-512 VBMI (`vpermb`), which the codebook × int8 kernels use inside the
/// `Avx512Vnni` level when present (`avx2::q4il_rows_vbmi`; same bits as without).
pub(crate) fn has_vbmi() -> bool {
    static VBMI: OnceLock<bool> = OnceLock::new();
    *VBMI.get_or_init(vbmi_feature)
}

#[cfg(target_arch = "x86_64")]
fn vbmi_feature() -> bool {
    std::arch::is_x86_feature_detected!("avx512vbmi")
}

#[cfg(not(target_arch = "x86_64"))]
fn vbmi_feature() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn avx2_features() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
fn avx512_features() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

#[cfg(target_arch = "x86_64")]
fn vnni_feature() -> bool {
    std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_features() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_features() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn vnni_feature() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn neon_features() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

#[cfg(not(target_arch = "aarch64"))]
fn neon_features() -> bool {
    false
}
