//! Caller-owned scratch buffers and the activation staging pass.
//!
//! Staging copies the activations into the layout the kernels read (padded
//! groups for quantized weights), applies a fused RMSNorm if requested, and for
//! the int8-activation path quantizes each weight group's block of activations
//! to `i8` with scale `absmax / 127`.

use crate::pack::{CHUNK, PackedWeight, Repr};

/// Optional RMSNorm applied to each activation row while it is staged
/// (llama2.c convention: `out = w ⊙ x / sqrt(mean(x²) + eps)`).
#[derive(Debug, Clone, Copy)]
pub struct RmsNorm<'a> {
    /// `[in]` norm weight.
    pub weight: &'a [f32],
    /// Epsilon added to the mean square.
    pub eps: f32,
}

/// Reusable buffers for the kernels. Grows only when too small: build it with
/// [`Scratch::for_weight`] (or warm it up once) and no later call allocates.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    /// `[n, padded_in]` staged f32 activations.
    pub(crate) xp: Vec<f32>,
    /// `[n, padded_in]` int8 activations.
    pub(crate) xq: Vec<i8>,
    /// `[n, n_groups]` activation scales `a_g`.
    pub(crate) a: Vec<f32>,
    /// `[n, n_groups]` `a_g · Σ xq` (zero-point correction term).
    pub(crate) b: Vec<f32>,
    /// `[n, 2·hidden]` stacked SwiGLU gate/up output of the runtime (`runtime/blocks.rs`).
    pub(crate) tmp: Vec<f32>,
}

/// Staged activations handed to the row kernels.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Staged<'a> {
    /// `[n, ld]` f32 activations (dense weights read them directly).
    F32 { x: &'a [f32], ld: usize },
    /// `[n, ld]` int8 activations + `[n, ng]` scales `a` + `[n, ng]` corrections `b`.
    Q8 {
        xq: &'a [i8],
        ld: usize,
        a: &'a [f32],
        b: &'a [f32],
        ng: usize,
    },
}

impl<'a> Staged<'a> {
    /// Restricts to tokens `t0..t1`.
    pub fn tokens(self, t0: usize, t1: usize) -> Staged<'a> {
        match self {
            Staged::F32 { x, ld } => Staged::F32 {
                x: &x[t0 * ld..t1 * ld],
                ld,
            },
            Staged::Q8 { xq, ld, a, b, ng } => Staged::Q8 {
                xq: &xq[t0 * ld..t1 * ld],
                ld,
                a: &a[t0 * ng..t1 * ng],
                b: &b[t0 * ng..t1 * ng],
                ng,
            },
        }
    }
}

/// The buffers one staging call writes: token rows `0..n` of its own (`xp` `[n, ld]` staged
/// floats — for int8, row 0 is the temporary normalized row; `xq` `[n, ld]`; `a`, `b`
/// `[n, ng]`). The whole [`Scratch`] on one thread, or one part's token rows on the pool.
pub(crate) struct StageBufs<'s> {
    pub xp: &'s mut [f32],
    pub xq: &'s mut [i8],
    pub a: &'s mut [f32],
    pub b: &'s mut [f32],
}

impl<'s> StageBufs<'s> {
    /// Stages `x: [n, in]` for `w` — int8 when `q8` and `w` has an int8 form, else floats;
    /// `simd`: AVX2 + FMA + F16C detected. The same bits as [`Scratch`]'s staging of these rows.
    pub(crate) fn stage(
        mut self,
        w: &PackedWeight,
        x: &'s [f32],
        n: usize,
        norm: Option<RmsNorm<'_>>,
        q8: bool,
        simd: bool,
    ) -> Staged<'s> {
        match w.q8_repr() {
            Some(q) if q8 => {
                let (ld, ng) = (q.padded_in(), q.n_groups);
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: `simd` is only set when AVX2 + FMA + F16C were detected.
                    unsafe { stage_q8_avx2(&mut self, q, w.inp, x, n, norm) };
                    return self.into_q8(n, ld, ng);
                }
                let _ = simd;
                // SAFETY: the scalar instantiation has no CPU requirement.
                unsafe { stage_q8_rows::<false>(&mut self, q, w.inp, x, n, norm) };
                self.into_q8(n, ld, ng)
            }
            _ => stage_f32_rows(self.xp, w, x, n, norm),
        }
    }

    fn into_q8(self, n: usize, ld: usize, ng: usize) -> Staged<'s> {
        Staged::Q8 {
            xq: &self.xq[..n * ld],
            ld,
            a: &self.a[..n * ng],
            b: &self.b[..n * ng],
            ng,
        }
    }
}

fn grow<T: Copy + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl Scratch {
    /// Empty scratch (grows on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Scratch big enough for `max_tokens` rows of activations for `w`
    /// (both activation modes, norm, SwiGLU) so no later call allocates.
    pub fn for_weight(w: &PackedWeight, max_tokens: usize) -> Self {
        let mut s = Scratch::new();
        s.reserve(w, max_tokens);
        s
    }

    /// Grows the buffers (if needed) for `n` tokens of `w`.
    pub fn reserve(&mut self, w: &PackedWeight, n: usize) {
        let (ld, ng) = match w.q8_repr() {
            Some(q) => (q.padded_in(), q.n_groups),
            None => (w.inp, 1),
        };
        grow(&mut self.xp, n * ld);
        grow(&mut self.xq, n * ld);
        grow(&mut self.a, n * ng);
        grow(&mut self.b, n * ng);
    }

    /// Stages float activations `x: [n, in]` for `w`. Dense weights without a
    /// norm read `x` in place; otherwise it is copied (normalized / padded).
    pub(crate) fn stage_f32<'s>(
        &'s mut self,
        w: &PackedWeight,
        x: &'s [f32],
        n: usize,
        norm: Option<RmsNorm<'_>>,
    ) -> Staged<'s> {
        self.grow_for(w, n, false);
        stage_f32_rows(&mut self.xp, w, x, n, norm)
    }

    /// Stages int8 activations for a quantized `w` (per-group absmax/127).
    pub(crate) fn stage_q8<'s>(
        &'s mut self,
        w: &PackedWeight,
        x: &'s [f32],
        n: usize,
        norm: Option<RmsNorm<'_>>,
        simd: bool,
    ) -> Staged<'s> {
        assert!(
            w.q8_repr().is_some(),
            "stage_q8 is only called for weights with an int8 form"
        );
        assert!(
            x.len() >= n * w.inp,
            "stage_q8: {} activations < {n} × {}",
            x.len(),
            w.inp
        );
        self.grow_for(w, n, true);
        self.bufs().stage(w, x, n, norm, true, simd)
    }

    /// Grows the buffers the staging of `n` tokens of `w` writes (`q8`: int8 activations).
    pub(crate) fn grow_for(&mut self, w: &PackedWeight, n: usize, q8: bool) {
        match (w.q8_repr(), &w.repr) {
            (Some(q), _) if q8 => {
                let (ld, ng) = (q.padded_in(), q.n_groups);
                grow(&mut self.xq, n * ld);
                grow(&mut self.a, n * ng);
                grow(&mut self.b, n * ng);
                grow(&mut self.xp, n * ld);
            }
            (_, Repr::Quant(q)) => grow(&mut self.xp, n * q.padded_in()),
            _ => grow(&mut self.xp, n * w.inp),
        }
    }

    /// All four buffers as one [`StageBufs`].
    pub(crate) fn bufs(&mut self) -> StageBufs<'_> {
        StageBufs {
            xp: &mut self.xp,
            xq: &mut self.xq,
            a: &mut self.a,
            b: &mut self.b,
        }
    }
}

/// Stages float activations `x: [n, in]` for `w` into `xp` (grown by the caller): dense
/// weights without a norm read `x` in place; otherwise rows are copied (normalized / padded).
fn stage_f32_rows<'s>(
    xp: &'s mut [f32],
    w: &PackedWeight,
    x: &'s [f32],
    n: usize,
    norm: Option<RmsNorm<'_>>,
) -> Staged<'s> {
    let inp = w.inp;
    let (ld, group, gp) = match &w.repr {
        Repr::Quant(q) => (q.padded_in(), q.group, q.gp),
        _ if norm.is_none() => return Staged::F32 { x, ld: inp },
        _ => (inp, inp, inp),
    };
    let xp = &mut xp[..n * ld];
    for (dst, src) in xp.chunks_mut(ld).zip(x.chunks(inp)) {
        let inv = norm.map(|nm| inv_rms(src, nm.eps));
        dst.fill(0.0);
        for (dg, sg) in dst.chunks_mut(gp).zip(src.chunks(group)) {
            dg[..sg.len()].copy_from_slice(sg);
        }
        if let (Some(nm), Some(inv)) = (norm, inv) {
            for (dg, (sg, wg)) in dst
                .chunks_mut(gp)
                .zip(src.chunks(group).zip(nm.weight.chunks(group)))
            {
                for ((d, s), wv) in dg.iter_mut().zip(sg).zip(wg) {
                    *d = wv * (s * inv);
                }
            }
        }
    }
    Staged::F32 { x: xp, ld }
}

/// [`stage_q8_rows`] compiled with AVX2 (the element loops vectorise; the
/// arithmetic is the same IEEE operations in the same order, so bit-identical).
///
/// # Safety
/// AVX2 + FMA + F16C must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn stage_q8_avx2(
    s: &mut StageBufs<'_>,
    q: &crate::pack::QuantRepr,
    inp: usize,
    x: &[f32],
    n: usize,
    norm: Option<RmsNorm<'_>>,
) {
    // SAFETY: this function's own contract (AVX2 + FMA + F16C available).
    unsafe { stage_q8_rows::<true>(s, q, inp, x, n, norm) }
}

/// Quantizes each token row of `x: [n, inp]` (normalized first when `norm`) per
/// weight group into `s.xq` (staging order of `q`), with scales `s.a` and
/// zero-point corrections `s.b`. Buffers were grown by the caller. SIMD and
/// scalar give the same bits for finite activations.
///
/// # Safety
/// `SIMD = true` only where AVX2 + FMA + F16C are available (`stage_q8_avx2`).
#[inline(always)]
unsafe fn stage_q8_rows<const SIMD: bool>(
    s: &mut StageBufs<'_>,
    q: &crate::pack::QuantRepr,
    inp: usize,
    x: &[f32],
    n: usize,
    norm: Option<RmsNorm<'_>>,
) {
    let (ld, ng, group) = (q.padded_in(), q.n_groups, q.group);
    let cpg = q.gp / CHUNK;
    // Every staged byte is written when the groups tile the row exactly in
    // whole chunks; otherwise the padding must read as zero.
    let dense = ld == inp && inp.is_multiple_of(group) && q.gp == group;
    for t in 0..n {
        let src = &x[t * inp..(t + 1) * inp];
        // [inp] the row as the weight sees it (normalized once).
        let v = &mut s.xp[..inp];
        match norm {
            Some(nm) => {
                let inv = inv_rms(src, nm.eps);
                for ((d, s), w) in v.iter_mut().zip(src).zip(&nm.weight[..inp]) {
                    *d = w * (s * inv);
                }
            }
            None => v.copy_from_slice(src),
        }
        let row = &mut s.xq[t * ld..(t + 1) * ld];
        if !dense {
            row.fill(0);
        }
        for g in 0..ng {
            let (c0, c1) = (g * group, ((g + 1) * group).min(inp));
            let blk = &v[c0..c1];
            let amax = absmax(blk, SIMD);
            let a = amax / 127.0;
            // 0 for an all-zero block, and for one so tiny that 127/amax overflows
            // (where SIMD's cvtt of +inf and the scalar cast would disagree).
            let qi = 127.0 / amax;
            let qi = if qi.is_finite() { qi } else { 0.0 };
            let mut sum = 0i32;
            let mut k0 = 0;
            // 8-element runs (j ≡ 0 mod 8) are contiguous in the staged row.
            #[cfg(target_arch = "x86_64")]
            if SIMD {
                use crate::stage_avx2::{hsum_epi32, quant8, quant32};
                use std::arch::x86_64::{_mm256_add_epi32, _mm256_setzero_si256};
                // SAFETY: SIMD = true only under AVX2 (this function's contract);
                // 32 (8) floats at k0 and the chunk halves (the 8-byte run) at
                // their staged positions exist.
                unsafe {
                    let mut qs = _mm256_setzero_si256();
                    while k0 + CHUNK <= blk.len() {
                        let ch = g * cpg + k0 / CHUNK;
                        // The second half follows the first in both staging orders
                        // (INT8: +16, INT4: +32).
                        let (p0, p1) = (q.q8_pos(ch, 0), q.q8_pos(ch, 16));
                        debug_assert!(p0 + 16 <= p1);
                        let (a, b) = row.split_at_mut(p1);
                        let (lo, hi) = (&mut a[p0..p0 + 16], &mut b[..16]);
                        qs = _mm256_add_epi32(qs, quant32(&blk[k0..k0 + CHUNK], qi, lo, hi));
                        k0 += CHUNK;
                    }
                    while k0 + 8 <= blk.len() {
                        let p = q.q8_pos(g * cpg + k0 / CHUNK, k0 % CHUNK);
                        qs = _mm256_add_epi32(qs, quant8(&blk[k0..k0 + 8], qi, &mut row[p..p + 8]));
                        k0 += 8;
                    }
                    sum += hsum_epi32(qs);
                }
            }
            for (k, v) in blk.iter().enumerate().skip(k0) {
                // Round half away from zero (cheap cast instead of libm `round`).
                let r = v * qi;
                let qv = ((r + 0.5f32.copysign(r)) as i32).clamp(-127, 127) as i8;
                sum += qv as i32;
                row[q.q8_pos(g * cpg + k / CHUNK, k % CHUNK)] = qv;
            }
            s.a[t * ng + g] = a;
            s.b[t * ng + g] = a * sum as f32;
        }
    }
}

/// `max |v|`, vectorised when `simd` (exact either way).
#[inline(always)]
fn absmax(v: &[f32], simd: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only true inside `stage_q8_avx2` (AVX2 detected).
        return unsafe { crate::stage_avx2::absmax(v, 0.0) };
    }
    let _ = simd;
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// `1 / sqrt(mean(x²) + eps)`, the squares summed in 8 lanes (element `i` into
/// lane `i % 8`, lanes combined pairwise): the same IEEE operations whether the
/// compiler vectorises it or not, so SIMD and scalar staging agree bit for bit.
#[inline(always)]
pub(crate) fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    for (l, v) in lanes.iter_mut().zip(tail) {
        *l += v * v;
    }
    let [l0, l1, l2, l3, l4, l5, l6, l7] = lanes;
    let ss = ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7));
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{QuantFormat, QuantParts};
    use half::f16;

    /// A quantized weight of the given shape and format (codes and scales do not
    /// matter for staging: only the group layout does).
    fn weight(out: usize, inp: usize, group: usize, format: QuantFormat) -> PackedWeight {
        let n_groups = inp.div_ceil(group);
        let row_bytes = if format.bits() == 4 {
            inp.div_ceil(2)
        } else {
            inp
        };
        let qweight = vec![0u8; out * row_bytes];
        let scales = vec![f16::ONE; out * n_groups];
        let zeros = vec![0u8; out * n_groups];
        let asym = matches!(format, QuantFormat::Int4Asym | QuantFormat::Int8Asym);
        PackedWeight::from_quant(QuantParts {
            format,
            out,
            inp,
            group,
            qweight: &qweight,
            scales: &scales,
            zeros: asym.then_some(&zeros[..]),
        })
        .unwrap()
    }

    /// SIMD staging (AVX2) writes exactly the bytes, scales and corrections of the
    /// scalar staging, for every format, width (incl. short last groups and
    /// padding) and with or without the fused RMSNorm.
    #[test]
    fn simd_staging_is_bit_identical_to_scalar() {
        if !crate::dispatch::has_avx2(crate::dispatch::detect()) {
            eprintln!("NOTICE: no AVX2 on this CPU; SIMD staging not exercised");
            return;
        }
        let mut seed = 17u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let formats = [
            QuantFormat::Int4Sym,
            QuantFormat::Int4Asym,
            QuantFormat::Int8Sym,
            QuantFormat::Int8Asym,
        ];
        for &inp in &[1usize, 4, 17, 32, 64, 72, 128, 172, 256] {
            for &group in &[4usize, 16, 32, 64, 128, inp] {
                if group > inp {
                    continue;
                }
                for format in formats {
                    let w = weight(3, inp, group, format);
                    for n in [1usize, 3] {
                        // Magnitudes from 1e-3 to 1e2, one exact zero row element.
                        let mut x: Vec<f32> = (0..n * inp)
                            .map(|i| rnd() * 10f32.powi((i % 6) as i32 - 3))
                            .collect();
                        x[0] = 0.0;
                        let nw: Vec<f32> = (0..inp).map(|_| 0.5 + rnd()).collect();
                        for norm in [
                            None,
                            Some(RmsNorm {
                                weight: &nw,
                                eps: 1e-5,
                            }),
                        ] {
                            let mut s = [Scratch::new(), Scratch::new()];
                            // Dirty buffers: padding must be zeroed, not assumed.
                            for sc in &mut s {
                                sc.xq = vec![0x55; 4096];
                            }
                            let got: Vec<(Vec<i8>, Vec<f32>, Vec<f32>)> = s
                                .iter_mut()
                                .zip([false, true])
                                .map(|(sc, simd)| match sc.stage_q8(&w, &x, n, norm, simd) {
                                    Staged::Q8 { xq, a, b, .. } => {
                                        (xq.to_vec(), a.to_vec(), b.to_vec())
                                    }
                                    Staged::F32 { .. } => unreachable!(),
                                })
                                .collect();
                            let what = format!(
                                "inp {inp} group {group} {format:?} n {n} norm {}",
                                norm.is_some()
                            );
                            assert_eq!(got[0].0, got[1].0, "codes: {what}");
                            // Every byte a group does not own reads as zero (the kernels
                            // multiply padding codes by it).
                            let Repr::Quant(q) = &w.repr else {
                                unreachable!()
                            };
                            let (ld, cpg) = (q.padded_in(), q.gp / CHUNK);
                            let mut owned = vec![false; ld];
                            for j in 0..inp {
                                let (g, k) = (j / group, j % group);
                                owned[q.q8_pos(g * cpg + k / CHUNK, k % CHUNK)] = true;
                            }
                            for (t, row) in got[1].0.chunks(ld).enumerate() {
                                for (p, &v) in row.iter().enumerate() {
                                    assert!(
                                        owned[p] || v == 0,
                                        "padding byte {p} of token {t} is {v}: {what}"
                                    );
                                }
                            }
                            assert_eq!(got[0].1, got[1].1, "scales: {what}");
                            assert_eq!(got[0].2, got[1].2, "corrections: {what}");
                        }
                    }
                }
            }
        }
    }
}
