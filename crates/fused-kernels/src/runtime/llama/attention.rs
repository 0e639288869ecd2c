//! Llama's position-dependent parts: RoPE on interleaved pairs and GQA attention over the
//! transposed KV cache, with the token split of equal attention cost used on the pool.

use crate::runtime::vecops::{attend, attend_pair};

/// Rotates the interleaved pairs of every head in `v` (`[heads·hs]`).
pub(super) fn rope(v: &mut [f32], cos: &[f32], sin: &[f32], hs: usize) {
    for head in v.chunks_exact_mut(hs) {
        for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
            let (v0, v1) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = v0 * c - v1 * s;
            head[2 * i + 1] = v0 * s + v1 * c;
        }
    }
}

/// Smallest attention (`Σ_t positions attended · query width`) split over the worker pool.
pub(super) const ATT_PAR_MIN: usize = 1 << 16;

/// Token range of `part` when `n` tokens at positions `pos0..` are split into `parts` of about
/// equal attention cost (token `t` attends `pos0 + t + 1` positions).
pub(super) fn split_by_cost(n: usize, pos0: usize, parts: usize, part: usize) -> (usize, usize) {
    let cost = |t: usize| t * (2 * pos0 + t + 1) / 2; // Σ_{u<t} (pos0 + u + 1)
    let total = cost(n);
    let bound = |k: usize| {
        if k >= parts {
            return n;
        }
        let want = total * k / parts;
        (0..=n).find(|&t| cost(t) >= want).unwrap_or(n)
    };
    (bound(part), bound(part + 1))
}

/// One layer's attention inputs: `q ‖ k ‖ v` rows and this layer's KV cache.
pub(super) struct Attn<'a> {
    /// `[n, tot]` projected (and rotated) q ‖ k ‖ v.
    pub(super) qkv: &'a [f32],
    pub(super) tot: usize,
    pub(super) qd: usize,
    /// `[nkv, hs, ld]` keys of this layer.
    pub(super) kc: &'a [f32],
    /// `[nkv, hs, ld]` values of this layer.
    pub(super) vc: &'a [f32],
    pub(super) ld: usize,
    pub(super) hs: usize,
    /// Query heads per KV head.
    pub(super) rep: usize,
    pub(super) pos0: usize,
    pub(super) scale: f32,
}

impl Attn<'_> {
    /// Attention of tokens `t0..t1` for KV heads `kh0..kh1` (and their query heads) into
    /// `out`: `[t1 − t0, qd]` for all heads, or the `[(kh1 − kh0)·rep·hs]` columns of those
    /// heads of one token. `sc [2·ld]`, `qh [≥ qd]` are this part's scratch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &self,
        ops: &crate::Ops,
        t0: usize,
        t1: usize,
        kh0: usize,
        kh1: usize,
        sc: &mut [f32],
        qh: &mut [f32],
        out: &mut [f32],
    ) {
        let (hs, ld, rep, qd) = (self.hs, self.ld, self.rep, self.qd);
        let c0 = kh0 * rep * hs;
        let width = (kh1 - kh0) * rep * hs;
        for t in t0..t1 {
            let p = self.pos0 + t;
            let q = &self.qkv[t * self.tot + c0..t * self.tot + c0 + width];
            for (qv, v) in qh.iter_mut().zip(q) {
                *qv = v * self.scale;
            }
            let orow = &mut out[(t - t0) * width..(t - t0 + 1) * width];
            debug_assert!(width == qd || t1 - t0 == 1);
            for kh in kh0..kh1 {
                let kb = kh * hs * ld;
                let (kt, vt) = (&self.kc[kb..kb + hs * ld], &self.vc[kb..kb + hs * ld]);
                // GQA: the `rep` query heads of this KV head, in pairs (offsets within the part).
                let (mut h, hend) = ((kh - kh0) * rep, (kh - kh0 + 1) * rep);
                while h + 2 <= hend {
                    let (a0, a1) = orow[h * hs..(h + 2) * hs].split_at_mut(hs);
                    let qs = [&qh[h * hs..(h + 1) * hs], &qh[(h + 1) * hs..(h + 2) * hs]];
                    attend_pair(ops, qs, kt, vt, ld, p + 1, sc, [a0, a1]);
                    h += 2;
                }
                if h < hend {
                    let o = &mut orow[h * hs..(h + 1) * hs];
                    attend(ops, &qh[h * hs..(h + 1) * hs], kt, vt, ld, p + 1, sc, o);
                }
            }
        }
    }
}
