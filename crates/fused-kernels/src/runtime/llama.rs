//! The Llama family on the native runtime (llama2.c semantics, equal to
//! `squish_core::model::llama::Llama`): RMSNorm (fused into the next matmul),
//! stacked Q/K/V GEMM + RoPE on interleaved pairs, GQA attention over a
//! transposed KV cache, fused SwiGLU FFN, tied or separate classifier. Per-layer head counts
//! and FFN widths come from the tensor shapes (head-pruned checkpoints keep `head_size`).

use squish_core::checkpoint::Weights;
use squish_core::config::LlamaConfig;
use squish_core::model::llama_names::layer_tensor_names;
use squish_core::model::structure::residual_width;
use squish_core::{Error, Result};

use super::load::{self, Stacked};
use super::profile;
use super::vecops::{add, attend, attend_pair};
use super::{Exec, Family, Head, Logits, Split, SwiGlu, reserve};
use crate::pool::{Disjoint, split};
use crate::scratch::{RmsNorm, Scratch};

/// One transformer block.
#[derive(Debug)]
struct Layer {
    /// `[d]`.
    attn_norm: Vec<f32>,
    /// wq ‖ wk ‖ wv: `[qd + 2·kvd, d]`.
    qkv: Stacked,
    /// `[d, qd]`.
    wo: crate::PackedWeight,
    /// `[d]`.
    ffn_norm: Vec<f32>,
    /// w1/w3 `[hidden, d]`, w2 `[d, hidden]`.
    ffn: SwiGlu,
    /// Query heads of this layer.
    nh: usize,
    /// Key/value heads of this layer.
    nkv: usize,
}

/// Llama weights, KV cache and preallocated activations.
#[derive(Debug)]
pub(crate) struct LlamaRt {
    head: Head,
    layers: Vec<Layer>,
    eps: f32,
    cap: usize,
    seq: usize,
    /// Cache row stride: `seq` rounded up to a multiple of 8.
    ld: usize,
    hs: usize,
    /// Largest key/value width over the layers (cache stride per layer).
    kvd_max: usize,
    /// `[seq, hs/2]` RoPE tables (llama2.c: angle `pos / θ^(2i/hs)` in f32).
    cos: Vec<f32>,
    /// `[seq, hs/2]`.
    sin: Vec<f32>,
    /// `[layers, nkv, hs, ld]` keys, positions contiguous.
    kc: Vec<f32>,
    /// `[layers, nkv, hs, ld]` values, positions contiguous.
    vc: Vec<f32>,
    /// `[cap, d]` residual stream.
    x: Vec<f32>,
    /// `[cap, qd + 2·kvd]` projected q ‖ k ‖ v.
    qkv: Vec<f32>,
    /// `[cap, max part rows]` one Q/K/V part when they cannot be stacked.
    part: Vec<f32>,
    /// `[cap, qd]` attention output.
    att: Vec<f32>,
    /// `[cap, d]` projection output before the residual add.
    o: Vec<f32>,
    /// `[cap, max hidden]` SwiGLU activations.
    hid: Vec<f32>,
    /// `[threads, 2, ld]` attention weights of (up to) two heads, per thread.
    sc: Vec<f32>,
    /// `[threads, qd]` scaled queries of one token, per thread.
    qh: Vec<f32>,
    s: Scratch,
}

impl LlamaRt {
    /// Loads and repacks every tensor; per-layer FFN widths come from `w1`'s shape and head
    /// counts from `wq`/`wk` (rows / `head_size`).
    /// `threads` sizes the per-thread attention scratch.
    pub fn load(c: &LlamaConfig, w: &Weights, cap: usize, threads: usize) -> Result<Self> {
        // The residual width from the shapes (width pruning keeps `head_size`).
        let d = residual_width(w, c.vocab_size)?;
        let (hs, seq) = (c.head_size(), c.seq_len);
        let cap = cap.min(seq);
        let mut layers = Vec::with_capacity(c.n_layers);
        let (mut qd_max, mut kvd_max) = (0, 0);
        for i in 0..c.n_layers {
            let n = layer_tensor_names(i);
            let rows = |t: &str| w.get(t).map(|x| x.shape.first().copied().unwrap_or(0));
            let (qd, kvd) = (rows(&n[1])?, rows(&n[2])?);
            if qd == 0 || kvd == 0 || qd % hs != 0 || kvd % hs != 0 || (qd / hs) % (kvd / hs) != 0 {
                return Err(Error::tensor(
                    &n[1],
                    format!(
                        "{qd} query rows / {kvd} kv rows do not form whole GQA head groups of {hs}"
                    ),
                ));
            }
            let (nh, nkv) = (qd / hs, kvd / hs);
            qd_max = qd_max.max(qd);
            kvd_max = kvd_max.max(kvd);
            let qkv = load::stacked(
                w,
                &[(n[1].clone(), qd), (n[2].clone(), kvd), (n[3].clone(), kvd)],
                d,
            )?;
            layers.push(Layer {
                attn_norm: load::vector(w, &n[0], &[d])?,
                qkv,
                wo: load::matrix(w, &n[4], d, qd)?,
                ffn_norm: load::vector(w, &n[5], &[d])?,
                ffn: SwiGlu::load(w, [&n[6], &n[7], &n[8]], d)?,
                nh,
                nkv,
            });
        }
        let (qd, kvd) = (qd_max, kvd_max);
        let head = Head::load(
            w,
            c.vocab_size,
            d,
            c.norm_eps,
            (!c.shared_classifier).then_some("output.weight"),
        )?;
        let half = hs / 2;
        // seq_len is the one size not backed by tensor bytes: bound what it allocates.
        super::check_alloc(
            "seq_len",
            &[
                (2 * c.n_layers * kvd, seq.next_multiple_of(8)),
                (2 * seq, half),
            ],
        )?;
        let (mut cos, mut sin) = (
            Vec::with_capacity(seq * half),
            Vec::with_capacity(seq * half),
        );
        for pos in 0..seq {
            for i in 0..half {
                let freq = 1.0f32 / c.rope_theta.powf((2 * i) as f32 / hs as f32);
                let (s, co) = (pos as f32 * freq).sin_cos();
                cos.push(co);
                sin.push(s);
            }
        }
        let hmax = layers.iter().map(|l| l.ffn.hidden).max().unwrap_or(0);
        let pmax = layers
            .iter()
            .filter(|l| matches!(l.qkv, Stacked::Split(_)))
            .map(|_| qd.max(kvd))
            .max()
            .unwrap_or(0);
        let mut s = Scratch::new();
        for l in &layers {
            reserve(
                &mut s,
                l.qkv
                    .weights()
                    .into_iter()
                    .chain([&l.wo])
                    .chain(l.ffn.weights()),
                cap,
            );
            l.ffn.reserve(&mut s, cap);
        }
        reserve(&mut s, [&head.cls], cap);
        let ld = seq.next_multiple_of(8);
        let cache = c.n_layers * kvd * ld;
        Ok(LlamaRt {
            layers,
            eps: c.norm_eps,
            cap,
            seq,
            ld,
            hs,
            kvd_max,
            cos,
            sin,
            kc: vec![0.0; cache],
            vc: vec![0.0; cache],
            x: vec![0.0; cap * d],
            qkv: vec![0.0; cap * (qd + 2 * kvd)],
            part: vec![0.0; cap * pmax],
            att: vec![0.0; cap * qd],
            o: vec![0.0; cap * d],
            hid: vec![0.0; cap * hmax],
            sc: vec![0.0; threads * 2 * ld],
            qh: vec![0.0; threads * qd],
            s,
            head,
        })
    }
}

/// Rotates the interleaved pairs of every head in `v` (`[heads·hs]`).
fn rope(v: &mut [f32], cos: &[f32], sin: &[f32], hs: usize) {
    for head in v.chunks_exact_mut(hs) {
        for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
            let (v0, v1) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = v0 * c - v1 * s;
            head[2 * i + 1] = v0 * s + v1 * c;
        }
    }
}

/// Smallest attention (`Σ_t positions attended · query width`) split over the worker pool.
const ATT_PAR_MIN: usize = 1 << 16;

/// Token range of `part` when `n` tokens at positions `pos0..` are split into `parts` of about
/// equal attention cost (token `t` attends `pos0 + t + 1` positions).
fn split_by_cost(n: usize, pos0: usize, parts: usize, part: usize) -> (usize, usize) {
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
struct Attn<'a> {
    /// `[n, tot]` projected (and rotated) q ‖ k ‖ v.
    qkv: &'a [f32],
    tot: usize,
    qd: usize,
    /// `[nkv, hs, ld]` keys of this layer.
    kc: &'a [f32],
    /// `[nkv, hs, ld]` values of this layer.
    vc: &'a [f32],
    ld: usize,
    hs: usize,
    /// Query heads per KV head.
    rep: usize,
    pos0: usize,
    scale: f32,
}

impl Attn<'_> {
    /// Attention of tokens `t0..t1` for KV heads `kh0..kh1` (and their query heads) into
    /// `out`: `[t1 − t0, qd]` for all heads, or the `[(kh1 − kh0)·rep·hs]` columns of those
    /// heads of one token. `sc [2·ld]`, `qh [≥ qd]` are this part's scratch.
    #[allow(clippy::too_many_arguments)]
    fn run(
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

impl Family for LlamaRt {
    fn cap(&self) -> usize {
        self.cap
    }
    fn max_positions(&self) -> usize {
        self.seq
    }
    fn can_rewind(&self) -> bool {
        true
    }
    fn reset(&mut self) {
        // Attention only reads cache positions written since the last reset.
    }

    fn forward(&mut self, ex: &Exec, tokens: &[u32], pos0: usize, out: Logits<'_>) -> Result<()> {
        let LlamaRt {
            head,
            layers,
            eps,
            ld,
            hs,
            kvd_max,
            cos,
            sin,
            kc,
            vc,
            x,
            qkv,
            part,
            att,
            o,
            hid,
            sc,
            qh,
            s,
            ..
        } = self;
        let (n, d, hs, ld, kvd_max) = (tokens.len(), head.d, *hs, *ld, *kvd_max);
        let half = hs / 2;
        let scale = 1.0 / (hs as f32).sqrt();
        {
            let _p = profile::span("embedding");
            head.embed(tokens, x)?;
        }
        for l in 0..layers.len() {
            let (nh, nkv) = (layers[l].nh, layers[l].nkv);
            let (qd, kvd) = (nh * hs, nkv * hs);
            let tot = qd + 2 * kvd;
            if n == 1 {
                // Decode: pull this layer's post-attention weights toward L2 while
                // the (compute-bound) attention runs.
                layers[l].wo.prefetch();
                layers[l].ffn.weights().for_each(|w| w.prefetch());
            }
            let layer = &mut layers[l];
            let norm = Some(RmsNorm {
                weight: &layer.attn_norm,
                eps: *eps,
            });
            {
                let _p = profile::span("qkv matmul");
                match &layer.qkv {
                    Stacked::Fused(w) => ex.mm(w, x, n, qkv, s, norm)?,
                    Stacked::Split(ws) => {
                        let mut col = 0;
                        for w in ws {
                            let r = w.out();
                            ex.mm(w, x, n, part, s, norm)?;
                            for t in 0..n {
                                qkv[t * tot + col..t * tot + col + r]
                                    .copy_from_slice(&part[t * r..(t + 1) * r]);
                            }
                            col += r;
                        }
                    }
                }
            }
            let lbase = l * kvd_max * ld;
            let rope_span = profile::span("rope + kv cache");
            for t in 0..n {
                let p = pos0 + t;
                let row = &mut qkv[t * tot..(t + 1) * tot];
                // RoPE on q (nh heads) and k (nkv heads), right after the projection.
                rope(
                    &mut row[..qd + kvd],
                    &cos[p * half..(p + 1) * half],
                    &sin[p * half..(p + 1) * half],
                    hs,
                );
                for j in 0..kvd {
                    kc[lbase + j * ld + p] = row[qd + j];
                    vc[lbase + j * ld + p] = row[qd + kvd + j];
                }
            }
            drop(rope_span);
            {
                let _p = profile::span("attention");
                let a = Attn {
                    qkv: &qkv[..],
                    tot,
                    qd,
                    kc: &kc[lbase..lbase + kvd * ld],
                    vc: &vc[lbase..lbase + kvd * ld],
                    ld,
                    hs,
                    rep: nh / nkv,
                    pos0,
                    scale,
                };
                // Work: query heads · keys attended · 2·hs.
                let work = (0..n).map(|t| pos0 + t + 1).sum::<usize>() * qd;
                match ex.pool_for(work, ATT_PAR_MIN) {
                    None => {
                        let (sc, qh) = (&mut sc[..2 * ld], &mut qh[..qd]);
                        a.run(&ex.ops, 0, n, 0, nkv, sc, qh, &mut att[..n * qd])
                    }
                    Some(pool) => {
                        let parts = pool.threads();
                        let (scd, qhd) = (Disjoint::new(sc), Disjoint::new(qh));
                        let attd = Disjoint::new(&mut att[..n * qd]);
                        let (sl, ql) = (2 * ld, qhd.len() / parts);
                        pool.run(&|k| {
                            // SAFETY: part k alone uses scratch slot k and its own output
                            // range (disjoint token rows, or one token's disjoint heads).
                            let (sc, qh) = unsafe {
                                (
                                    scd.range(k * sl, (k + 1) * sl),
                                    qhd.range(k * ql, (k + 1) * ql),
                                )
                            };
                            if n == 1 {
                                let (h0, h1) = split(nkv, parts, k, 1);
                                let (c0, c1) = (h0 * a.rep * hs, h1 * a.rep * hs);
                                if h0 < h1 {
                                    // SAFETY: as above.
                                    let o = unsafe { attd.range(c0, c1) };
                                    a.run(&ex.ops, 0, 1, h0, h1, sc, qh, o);
                                }
                            } else {
                                let (t0, t1) = split_by_cost(n, pos0, parts, k);
                                if t0 < t1 {
                                    // SAFETY: as above.
                                    let o = unsafe { attd.range(t0 * qd, t1 * qd) };
                                    a.run(&ex.ops, t0, t1, 0, nkv, sc, qh, o);
                                }
                            }
                        });
                    }
                }
            }
            {
                let _p = profile::span("wo matmul");
                ex.mm(&layer.wo, att, n, o, s, None)?;
            }
            add(&mut x[..n * d], &o[..n * d]);
            let norm = Some(RmsNorm {
                weight: &layer.ffn_norm,
                eps: *eps,
            });
            {
                let _p = profile::span("ffn w1/w3 matmul + swiglu");
                layer.ffn.up(ex, Split::Pool, x, n, hid, s, norm)?;
            }
            {
                let _p = profile::span("ffn w2 matmul");
                ex.mm(&layer.ffn.w2, hid, n, o, s, None)?;
            }
            add(&mut x[..n * d], &o[..n * d]);
        }
        let _p = profile::span("classifier");
        head.logits(ex, x, n, out, s)
    }
}
