//! Public matvec / matmul entry points and per-path dispatch.

use crate::dispatch::{self, SimdLevel};
use crate::error::{Result, check_len};
use crate::pack::{PackedWeight, Repr};
use crate::pool::{Disjoint, Pool, split};
use crate::runtime::profile;
use crate::scalar;
use crate::scratch::{RmsNorm, Scratch, StageBufs, Staged};

/// Activation precision used with quantized weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Activations {
    /// Float activations, weights dequantized in registers.
    #[default]
    F32,
    /// Activations quantized per weight group to int8 (scale absmax/127), integer
    /// dot products (codebook weights use their int8-level form, `crate::codebook`).
    /// Ignored (treated as `F32`) for F32/F16 weights.
    Int8,
}

/// Options for [`PackedWeight::matmul_opts`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MatOpts<'a> {
    /// Activation precision for quantized weights.
    pub act: Activations,
    /// Requested SIMD path (`None` = [`dispatch::active`]); clamped to the hardware.
    pub level: Option<SimdLevel>,
    /// RMSNorm fused into the activation staging pass.
    pub norm: Option<RmsNorm<'a>>,
    /// Worker threads (0 or 1 = run on the calling thread). One token: output
    /// rows are split across threads; several tokens: tokens are split.
    pub threads: usize,
}

impl PackedWeight {
    /// Decode GEMV `y[out] = W · x[in]` with float activations.
    pub fn matvec(&self, x: &[f32], y: &mut [f32], scratch: &mut Scratch) -> Result<()> {
        self.matmul_opts(x, 1, y, scratch, &MatOpts::default())
    }

    /// Decode GEMV with int8 activations (quantized weights; F32/F16 fall back to float).
    pub fn matvec_q8(&self, x: &[f32], y: &mut [f32], scratch: &mut Scratch) -> Result<()> {
        let opts = MatOpts {
            act: Activations::Int8,
            ..MatOpts::default()
        };
        self.matmul_opts(x, 1, y, scratch, &opts)
    }

    /// Prefill GEMM: `x: [n, in]` → `y: [n, out]` (`y[t] = W · x[t]`).
    pub fn matmul(&self, x: &[f32], n: usize, y: &mut [f32], scratch: &mut Scratch) -> Result<()> {
        self.matmul_opts(x, n, y, scratch, &MatOpts::default())
    }

    /// Checks the lengths of `x`, `y` and the fused norm's weight; `Ok(false)` when there is
    /// nothing to compute (`n == 0`).
    fn check_args(&self, x: &[f32], n: usize, y: &[f32], opts: &MatOpts<'_>) -> Result<bool> {
        check_len("x", n * self.inp, x.len())?;
        check_len("y", n * self.out, y.len())?;
        if let Some(nm) = opts.norm {
            check_len("norm weight", self.inp, nm.weight.len())?;
        }
        Ok(n > 0)
    }

    /// General entry point: `x: [n, in]` → `y: [n, out]` with [`MatOpts`].
    pub fn matmul_opts(
        &self,
        x: &[f32], // [n, in]
        n: usize,
        y: &mut [f32], // [n, out]
        scratch: &mut Scratch,
        opts: &MatOpts<'_>,
    ) -> Result<()> {
        if !self.check_args(x, n, y, opts)? {
            return Ok(());
        }
        let level = dispatch::resolve(opts.level);
        let st = stage(self, x, n, scratch, opts);
        run_threaded(level, self, st, n, y, opts.threads);
        Ok(())
    }

    /// [`PackedWeight::matmul_opts`] on a persistent [`Pool`] (`opts.threads` is ignored): the
    /// runtime's entry point. Activation staging runs on the calling thread, the rows (one
    /// token) or tokens (several) are split over the pool's threads; results are identical
    /// for any pool size.
    pub(crate) fn matmul_pooled(
        &self,
        x: &[f32], // [n, in]
        n: usize,
        y: &mut [f32], // [n, out]
        scratch: &mut Scratch,
        opts: &MatOpts<'_>,
        pool: Option<&Pool>,
    ) -> Result<()> {
        if !self.check_args(x, n, y, opts)? {
            return Ok(());
        }
        let level = dispatch::resolve(opts.level);
        if let Some(p) = pool.filter(|p| p.threads() > 1 && n > 1) {
            run_pool_staged(level, self, x, n, y, scratch, opts, p);
            return Ok(());
        }
        let st = {
            let _p = profile::span("activation staging (norm, int8)");
            stage(self, x, n, scratch, opts)
        };
        match pool {
            Some(p) if p.threads() > 1 => run_pool(level, self, st, n, y, p),
            _ => run_rows(level, self, st, n, 0, self.out, y, self.out),
        }
        Ok(())
    }
}

/// Several tokens on a pool: every part stages its own tokens (the staging of a token depends
/// on that token alone, so the same bits as staging all of them first) and multiplies them, so
/// the staging is split too and its rows stay in the cache of the core that reads them. The
/// profile charges the parts' staging to the matmul (spans time the calling thread only).
#[allow(clippy::too_many_arguments)]
fn run_pool_staged(
    level: SimdLevel,
    w: &PackedWeight,
    x: &[f32], // [n, in]
    n: usize,
    y: &mut [f32], // [n, out]
    scratch: &mut Scratch,
    opts: &MatOpts<'_>,
    p: &Pool,
) {
    let q8 = opts.act == Activations::Int8 && w.q8_repr().is_some();
    let (inp, out, parts) = (w.inp, w.out, p.threads());
    // Row widths of the staged buffers (as `Scratch::grow_for` sizes them).
    let (ld, ng) = match (w.q8_repr(), &w.repr) {
        (Some(q), _) if q8 => (q.padded_in(), q.n_groups),
        (_, Repr::Quant(q)) => (q.padded_in(), 0),
        _ => (inp, 0),
    };
    scratch.grow_for(w, n, q8);
    let simd = dispatch::has_avx2(level);
    let b = scratch.bufs();
    let (xq_len, ab_len) = if q8 { (n * ld, n * ng) } else { (0, 0) };
    let xp = Disjoint::new(&mut b.xp[..n * ld]);
    let xq = Disjoint::new(&mut b.xq[..xq_len]);
    let (ad, bd) = (
        Disjoint::new(&mut b.a[..ab_len]),
        Disjoint::new(&mut b.b[..ab_len]),
    );
    let yd = Disjoint::new(y);
    p.run(&|k| {
        let (t0, t1) = split(n, parts, k, 1);
        if t0 >= t1 {
            return;
        }
        let r = |l: usize, len: usize| if len == 0 { (0, 0) } else { (t0 * l, t1 * l) };
        let ((p0, p1), (q0, q1), (g0, g1)) = (r(ld, n * ld), r(ld, xq_len), r(ng, ab_len));
        // SAFETY: the parts' token ranges are disjoint (`split`), hence so are their rows of
        // every buffer and of `y`.
        let (bufs, yc) = unsafe {
            let bufs = StageBufs {
                xp: xp.range(p0, p1),
                xq: xq.range(q0, q1),
                a: ad.range(g0, g1),
                b: bd.range(g0, g1),
            };
            (bufs, yd.range(t0 * out, t1 * out))
        };
        let xs = &x[t0 * inp..t1 * inp];
        let st = bufs.stage(w, xs, t1 - t0, opts.norm, q8, simd);
        run_rows(level, w, st, t1 - t0, 0, out, yc, out);
    });
}

/// [`run_threaded`] on a persistent pool: the same splits (rows in multiples of 8 for one
/// token, whole tokens otherwise), so the same bits as one thread.
fn run_pool(level: SimdLevel, w: &PackedWeight, st: Staged<'_>, n: usize, y: &mut [f32], p: &Pool) {
    let (out, parts) = (w.out, p.threads());
    let yd = Disjoint::new(y);
    if n == 1 {
        p.run(&|k| {
            let (r0, r1) = split(out, parts, k, 8);
            if r0 < r1 {
                // SAFETY: the parts' row ranges are disjoint (`split`).
                let yc = unsafe { yd.range(r0, r1) };
                run_rows(level, w, st, 1, r0, r1, yc, r1 - r0);
            }
        });
    } else {
        p.run(&|k| {
            let (t0, t1) = split(n, parts, k, 1);
            if t0 < t1 {
                // SAFETY: the parts' token ranges, hence output rows, are disjoint (`split`).
                let yc = unsafe { yd.range(t0 * out, t1 * out) };
                run_rows(level, w, st.tokens(t0, t1), t1 - t0, 0, out, yc, out);
            }
        });
    }
}

/// Stages activations for `w` according to `opts`.
pub(crate) fn stage<'s>(
    w: &PackedWeight,
    x: &'s [f32],
    n: usize,
    scratch: &'s mut Scratch,
    opts: &MatOpts<'_>,
) -> Staged<'s> {
    let q8 = opts.act == Activations::Int8 && w.q8_repr().is_some();
    if q8 {
        let simd = dispatch::has_avx2(dispatch::resolve(opts.level));
        scratch.stage_q8(w, x, n, opts.norm, simd)
    } else {
        scratch.stage_f32(w, x, n, opts.norm)
    }
}

/// Computes all rows for `n` staged tokens, optionally on several threads.
pub(crate) fn run_threaded(
    level: SimdLevel,
    w: &PackedWeight,
    st: Staged<'_>,
    n: usize,
    y: &mut [f32], // [n, out]
    threads: usize,
) {
    let out = w.out;
    if threads <= 1 {
        return run_rows(level, w, st, n, 0, out, y, out);
    }
    if n == 1 {
        let per = out.div_ceil(threads).div_ceil(8) * 8;
        std::thread::scope(|s| {
            let mut chunks = y.chunks_mut(per).enumerate();
            let first = chunks.next();
            for (k, yc) in chunks {
                let (r0, r1) = (k * per, k * per + yc.len());
                s.spawn(move || run_rows(level, w, st, 1, r0, r1, yc, r1 - r0));
            }
            if let Some((_, yc)) = first {
                let len = yc.len();
                run_rows(level, w, st, 1, 0, len, yc, len);
            }
        });
    } else {
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            let mut chunks = y.chunks_mut(per * out).enumerate();
            let first = chunks.next();
            for (k, yc) in chunks {
                let (t0, t1) = (k * per, k * per + yc.len() / out);
                let st = st.tokens(t0, t1);
                s.spawn(move || run_rows(level, w, st, t1 - t0, 0, out, yc, out));
            }
            if let Some((_, yc)) = first {
                let nt = yc.len() / out;
                run_rows(level, w, st.tokens(0, nt), nt, 0, out, yc, out);
            }
        });
    }
}

/// Computes rows `r0..r1` for `n` staged tokens into `y[t * ldy + (r - r0)]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_rows(
    level: SimdLevel,
    w: &PackedWeight,
    st: Staged<'_>,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32],
    ldy: usize,
) {
    let inp = w.inp;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = level;
    match (&w.repr, st) {
        (Repr::F32(wv), Staged::F32 { x, ld }) => {
            #[cfg(target_arch = "x86_64")]
            match level {
                // SAFETY: `level` comes from dispatch::resolve, so the CPU supports it.
                SimdLevel::Avx512 | SimdLevel::Avx512Vnni => unsafe {
                    return crate::avx512::f32_rows(wv, inp, x, ld, n, r0, r1, y, ldy);
                },
                // SAFETY: as above, AVX2+FMA+F16C were detected.
                SimdLevel::Avx2 => unsafe {
                    return crate::avx2::f32_rows(wv, inp, x, ld, n, r0, r1, y, ldy);
                },
                _ => {}
            }
            #[cfg(target_arch = "aarch64")]
            if level == SimdLevel::Neon {
                return crate::neon::f32_rows(wv, inp, x, ld, n, r0, r1, y, ldy);
            }
            scalar::f32_rows(wv, inp, x, ld, n, r0, r1, y, ldy)
        }
        (Repr::F16(wv), Staged::F32 { x, ld }) => {
            #[cfg(target_arch = "x86_64")]
            match level {
                // SAFETY: `level` comes from dispatch::resolve, so the CPU supports it.
                SimdLevel::Avx512 | SimdLevel::Avx512Vnni => unsafe {
                    return crate::avx512::f16_rows(wv, inp, x, ld, n, r0, r1, y, ldy);
                },
                // SAFETY: as above, AVX2+FMA+F16C were detected.
                SimdLevel::Avx2 => unsafe {
                    return crate::avx2::f16_rows(wv, inp, x, ld, n, r0, r1, y, ldy);
                },
                _ => {}
            }
            scalar::f16_rows(wv, inp, x, ld, n, r0, r1, y, ldy)
        }
        (Repr::Quant(q), Staged::F32 { x, ld }) => {
            #[cfg(target_arch = "x86_64")]
            match level {
                // SAFETY: `level` comes from dispatch::resolve, so the CPU supports it.
                SimdLevel::Avx512 | SimdLevel::Avx512Vnni => unsafe {
                    return crate::avx512::qf_rows(q, x, ld, n, r0, r1, y, ldy);
                },
                // SAFETY: as above, AVX2+FMA+F16C were detected.
                SimdLevel::Avx2 => unsafe {
                    return crate::avx2::qf_rows(q, x, ld, n, r0, r1, y, ldy);
                },
                _ => {}
            }
            #[cfg(target_arch = "aarch64")]
            if level == SimdLevel::Neon {
                return crate::neon::qf_rows(q, x, ld, n, r0, r1, y, ldy);
            }
            scalar::qf_rows(q, x, ld, n, r0, r1, y, ldy)
        }
        (_, Staged::Q8 { xq, ld, a, b, .. }) => {
            let Some(q) = w.q8_repr() else {
                unreachable!("int8 activations are only staged for quantized weights")
            };
            #[cfg(target_arch = "x86_64")]
            match level {
                // SAFETY: `level` comes from dispatch::resolve: AVX2+FMA+F16C and AVX-512
                // F/BW/VL + VNNI were detected; `has_vbmi` detected AVX-512 VBMI.
                SimdLevel::Avx512Vnni if q.bits == 4 && q.lut.is_some() && dispatch::has_vbmi() => unsafe {
                    return crate::avx2::q4il_rows_vbmi(q, w.out, xq, ld, a, b, n, r0, r1, y, ldy);
                },
                // SAFETY: `level` comes from dispatch::resolve: AVX2+FMA+F16C and AVX-512
                // F/BW/VL + VNNI were detected.
                SimdLevel::Avx512Vnni if q.bits == 4 => unsafe {
                    return crate::avx2::q4il_rows_vnni(q, w.out, xq, ld, a, b, n, r0, r1, y, ldy);
                },
                // SAFETY: `level` comes from dispatch::resolve: AVX-512 F/BW/VL + VNNI were detected.
                SimdLevel::Avx512Vnni => unsafe {
                    return crate::avx512::q8_rows(q, xq, ld, a, b, n, r0, r1, y, ldy);
                },
                // SAFETY: Avx2 or Avx512 level implies AVX2+FMA+F16C were detected.
                SimdLevel::Avx2 | SimdLevel::Avx512 if q.bits == 4 => unsafe {
                    return crate::avx2::q4il_rows(q, w.out, xq, ld, a, b, n, r0, r1, y, ldy);
                },
                // SAFETY: Avx2 or Avx512 level implies AVX2+FMA+F16C were detected.
                SimdLevel::Avx2 | SimdLevel::Avx512 => unsafe {
                    return crate::avx2::q8_rows(q, xq, ld, a, b, n, r0, r1, y, ldy);
                },
                _ => {}
            }
            scalar::q8_rows(q, xq, ld, a, b, n, r0, r1, y, ldy)
        }
        (Repr::Codebook(q), Staged::F32 { x, ld }) => {
            #[cfg(target_arch = "x86_64")]
            match level {
                // SAFETY: `level` comes from dispatch::resolve: AVX-512 F/BW/VL (+ AVX2, FMA,
                // F16C) were detected.
                SimdLevel::Avx512 | SimdLevel::Avx512Vnni => unsafe {
                    return crate::avx512_cb::cb_rows(q, inp, x, ld, n, r0, r1, y, ldy);
                },
                // SAFETY: as above, AVX2+FMA+F16C were detected.
                SimdLevel::Avx2 => unsafe {
                    return crate::avx2::cb_rows(q, inp, x, ld, n, r0, r1, y, ldy);
                },
                _ => {}
            }
            crate::codebook::cb_rows(q, inp, x, ld, n, r0, r1, y, ldy)
        }
    }
}
