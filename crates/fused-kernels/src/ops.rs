//! Fused element-wise ops: RMSNorm, softmax, RoPE, SwiGLU, Mamba scan step.

use crate::dispatch::{self, SimdLevel};
use crate::error::{KernelError, Result, check_len};
use crate::matmul::{MatOpts, SWIGLU_TILE, check_pair, run_rows, stage};
use crate::pack::PackedWeight;
use crate::scratch::Scratch;

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

    /// Fused SwiGLU FFN input: `out[t] = silu(W1·x[t]) ⊙ (W3·x[t])` for
    /// `x: [n, in]`, `out: [n, hidden]`. The activations are staged once (with
    /// the optional fused RMSNorm / int8 quantization from `opts`), then both
    /// matrices are walked together tile by tile ([`SWIGLU_TILE`] rows) and
    /// combined while the tile is hot. `opts.threads` is ignored.
    pub fn swiglu_matmul(
        &self,
        w1: &PackedWeight,
        w3: &PackedWeight,
        x: &[f32], // [n, in]
        n: usize,
        out: &mut [f32], // [n, hidden]
        scratch: &mut Scratch,
        opts: &MatOpts<'_>,
    ) -> Result<()> {
        check_pair(w1, w3)?;
        check_len("x", n * w1.inp, x.len())?;
        check_len("out", n * w1.out, out.len())?;
        if let Some(nm) = opts.norm {
            check_len("norm weight", w1.inp, nm.weight.len())?;
        }
        let hidden = w1.out;
        let mut tmp = std::mem::take(&mut scratch.tmp); // [2, n, TILE]
        if tmp.len() < 2 * n * SWIGLU_TILE {
            tmp.resize(2 * n * SWIGLU_TILE, 0.0);
        }
        let level = dispatch::resolve(opts.level);
        let st = stage(w1, x, n, scratch, opts);
        let (g, u) = tmp.split_at_mut(n * SWIGLU_TILE);
        for r0 in (0..hidden).step_by(SWIGLU_TILE) {
            let r1 = (r0 + SWIGLU_TILE).min(hidden);
            let m = r1 - r0;
            run_rows(level, w1, st, n, r0, r1, g, m);
            run_rows(level, w3, st, n, r0, r1, u, m);
            for t in 0..n {
                let o = &mut out[t * hidden + r0..t * hidden + r1];
                self.swiglu(o, &g[t * m..(t + 1) * m], &u[t * m..(t + 1) * m])?;
            }
        }
        scratch.tmp = tmp;
        Ok(())
    }

    /// RoPE in place (llama2.c convention) on a q or k vector of `n_heads *
    /// head_size` floats: each pair `(2i, 2i+1)` inside a head is rotated by
    /// `pos / 10000^(2i / head_size)`.
    pub fn rope(&self, v: &mut [f32], pos: usize, head_size: usize) -> Result<()> {
        if head_size == 0 || !head_size.is_multiple_of(2) || !v.len().is_multiple_of(head_size) {
            return Err(KernelError::Shape(format!(
                "rope: len {} must be a multiple of an even head_size {head_size}",
                v.len()
            )));
        }
        for i in (0..head_size).step_by(2) {
            let freq = 1.0 / 10000f32.powf(i as f32 / head_size as f32);
            let (sin, cos) = (pos as f32 * freq).sin_cos();
            for head in v.chunks_exact_mut(head_size) {
                let (v0, v1) = (head[i], head[i + 1]);
                head[i] = v0 * cos - v1 * sin;
                head[i + 1] = v0 * sin + v1 * cos;
            }
        }
        Ok(())
    }

    /// One fused Mamba selective-scan step for a single token:
    /// `h = exp(Δ·A) ⊙ h + (Δ·x) ⊗ B`, `y = h·C + D ⊙ x`, in one pass over `h`.
    /// Shapes: `x, delta, d, y: [d_inner]`, `b, c: [N]`, `a, h: [d_inner, N]`.
    /// `delta` must already be softplus'ed and `a` negative.
    #[allow(clippy::too_many_arguments)]
    pub fn scan_step(
        &self,
        x: &[f32],
        delta: &[f32],
        b: &[f32],
        c: &[f32],
        a: &[f32],
        d: &[f32],
        h: &mut [f32],
        y: &mut [f32],
    ) -> Result<()> {
        let (di, ns) = (x.len(), b.len());
        check_len("scan delta", di, delta.len())?;
        check_len("scan C", ns, c.len())?;
        check_len("scan A", di * ns, a.len())?;
        check_len("scan D", di, d.len())?;
        check_len("scan h", di * ns, h.len())?;
        check_len("scan y", di, y.len())?;
        #[cfg(target_arch = "x86_64")]
        if self.simd() {
            // SAFETY: an x86 SIMD level was verified against the CPU by dispatch::resolve.
            unsafe { crate::ops_avx2::scan_step(x, delta, b, c, a, d, h, y) };
            return Ok(());
        }
        for i in 0..di {
            let (dt, xi) = (delta[i], x[i]);
            let mut yi = 0.0;
            for k in 0..ns {
                let hv = (dt * a[i * ns + k]).exp() * h[i * ns + k] + dt * xi * b[k];
                h[i * ns + k] = hv;
                yi += hv * c[k];
            }
            y[i] = yi + d[i] * xi;
        }
        Ok(())
    }
}
