//! Element-wise ops of the runtime: RMSNorm, softmax, SwiGLU.

use crate::dispatch::{self, SimdLevel};
use crate::error::{Result, check_len};

/// Op dispatcher bound to one SIMD level (AVX-512 uses the AVX2 op code:
/// these ops touch a few hundred floats and are not the bottleneck).
#[derive(Debug, Clone, Copy)]
pub struct Ops {
    level: SimdLevel,
}

impl Default for Ops {
    fn default() -> Self {
        Ops::new(None)
    }
}

impl Ops {
    /// Ops for the requested level (`None` = [`dispatch::active`]), clamped to the hardware.
    pub fn new(level: Option<SimdLevel>) -> Self {
        Ops {
            level: dispatch::resolve(level),
        }
    }

    /// The level actually used.
    pub fn level(&self) -> SimdLevel {
        self.level
    }

    #[cfg(target_arch = "x86_64")]
    fn simd(&self) -> bool {
        dispatch::has_avx2(self.level)
    }

    /// `out = weight ⊙ x / sqrt(mean(x²) + eps)` (llama2.c `rmsnorm`).
    pub fn rmsnorm(&self, out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) -> Result<()> {
        check_len("rmsnorm out", x.len(), out.len())?;
        check_len("rmsnorm weight", x.len(), weight.len())?;
        if x.is_empty() {
            return Ok(());
        }
        #[cfg(target_arch = "x86_64")]
        if self.simd() {
            // SAFETY: an x86 SIMD level was verified against the CPU by dispatch::resolve.
            unsafe { crate::ops_avx2::rmsnorm(out, x, weight, eps) };
            return Ok(());
        }
        let inv = crate::scratch::inv_rms(x, eps);
        for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
            *o = w * (inv * v);
        }
        Ok(())
    }

    /// In-place numerically stable softmax.
    pub fn softmax(&self, x: &mut [f32]) {
        if x.is_empty() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if self.simd() {
            // SAFETY: an x86 SIMD level was verified against the CPU by dispatch::resolve.
            unsafe { crate::ops_avx2::softmax(x) };
            return;
        }
        let m = x.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
        let mut sum = 0.0;
        for v in x.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        x.iter_mut().for_each(|v| *v /= sum);
    }

    /// `out = silu(gate) ⊙ up`, `silu(v) = v · sigmoid(v)`.
    pub fn swiglu(&self, out: &mut [f32], gate: &[f32], up: &[f32]) -> Result<()> {
        check_len("swiglu gate", out.len(), gate.len())?;
        check_len("swiglu up", out.len(), up.len())?;
        #[cfg(target_arch = "x86_64")]
        if self.simd() {
            // SAFETY: an x86 SIMD level was verified against the CPU by dispatch::resolve.
            unsafe { crate::ops_avx2::swiglu(out, gate, up) };
            return Ok(());
        }
        for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
        Ok(())
    }
}
