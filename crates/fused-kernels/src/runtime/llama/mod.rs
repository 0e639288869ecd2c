//! The Llama family on the native runtime (llama2.c semantics, equal to
//! `squish_core::model::llama::Llama`): RMSNorm (fused into the next matmul),
//! stacked Q/K/V GEMM + RoPE on interleaved pairs, GQA attention over a
//! transposed KV cache, fused SwiGLU FFN, tied or separate classifier. Per-layer head counts
//! and FFN widths come from the tensor shapes (head-pruned checkpoints keep `head_size`).
//!
//! A layer is three pool jobs (`runtime/phases.rs`): tokens (q ‖ k ‖ v, RoPE, cache writes),
//! attention (query tokens of equal cost, `attention.rs`), tokens (wo + residual, the FFN +
//! residual); so every token's work stays on one core from one hand-off to the next.

use squish_core::checkpoint::Weights;
use squish_core::config::LlamaConfig;
use squish_core::model::llama_names::layer_tensor_names;
use squish_core::model::structure::residual_width;
use squish_core::{Error, Result};

mod attention;

use crate::pool::{Disjoint, split};
use crate::runtime::load::{self, Stacked};
use crate::runtime::phases::Tokens;
use crate::runtime::profile;
use crate::runtime::vecops::add;
use crate::runtime::{Exec, Family, Head, Logits, SwiGlu, reserve};
use crate::scratch::{RmsNorm, Scratch};
use attention::{ATT_PAR_MIN, Attn, rope, split_by_cost};
use std::sync::Mutex;

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
    /// One matmul scratch per thread (the token phases' parts).
    parts: Vec<Mutex<Scratch>>,
    /// The classifier's scratch.
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
        // Every part's scratch can stage any matmul (and SwiGLU) of the layers for `cap` tokens.
        let part_scratch = || {
            let mut s = Scratch::new();
            for l in &layers {
                let ws = l.qkv.weights().into_iter().chain([&l.wo]);
                reserve(&mut s, ws.chain(l.ffn.weights()), cap);
                l.ffn.reserve(&mut s, cap);
            }
            Mutex::new(s)
        };
        let parts = (0..threads.max(1)).map(|_| part_scratch()).collect();
        let mut s = Scratch::new();
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
            parts,
            s,
            head,
        })
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
            parts,
            s,
            cap,
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
            let layer = &layers[l];
            let mut tk = Tokens::new(ex, n, n * d * tot, parts);
            let lbase = l * kvd_max * ld;
            // Tokens: q ‖ k ‖ v (attention norm fused), RoPE on q and k, k and v into the cache.
            let sp = profile::span("qkv matmul");
            {
                let xr = &x[..];
                let norm = Some(RmsNorm {
                    weight: &layer.attn_norm,
                    eps: *eps,
                });
                let pl = part.len() / (*cap).max(1);
                let (qkvd, partd) = (
                    Disjoint::new(&mut qkv[..n * tot]),
                    Disjoint::new(&mut part[..n * pl]),
                );
                let (kcd, vcd) = (Disjoint::new(&mut kc[..]), Disjoint::new(&mut vc[..]));
                let (cos, sin) = (&cos[..], &sin[..]);
                tk.run(&|p| {
                    let (t0, t1, m, s) = (p.t0, p.t1, p.t1 - p.t0, &mut *p.bufs);
                    let xs = &xr[t0 * d..t1 * d];
                    // SAFETY: tokens t0..t1 belong to this part alone.
                    let qkv = unsafe { qkvd.range(t0 * tot, t1 * tot) };
                    match &layer.qkv {
                        Stacked::Fused(w) => ex.mm_split(p.split, w, xs, m, qkv, s, norm)?,
                        Stacked::Split(ws) => {
                            // Int8 activations: staged once for Q, K and V when their layouts
                            // agree, each writing its columns of q ‖ k ‖ v directly.
                            if let Some(sh) = ex.stage_shared(p.split, ws.iter(), xs, m, s, norm)? {
                                let mut col = 0;
                                for w in ws {
                                    sh.run(w, &mut qkv[col..], tot)
                                        .map_err(|e| Error::invalid(format!("matmul: {e}")))?;
                                    col += w.out();
                                }
                            } else {
                                // SAFETY: as above.
                                let part = unsafe { partd.range(t0 * pl, t1 * pl) };
                                let mut col = 0;
                                for w in ws {
                                    let r = w.out();
                                    ex.mm_split(p.split, w, xs, m, part, s, norm)?;
                                    for t in 0..m {
                                        qkv[t * tot + col..t * tot + col + r]
                                            .copy_from_slice(&part[t * r..(t + 1) * r]);
                                    }
                                    col += r;
                                }
                            }
                        }
                    }
                    let _rope = profile::span("rope + kv cache");
                    for t in 0..m {
                        let pos = pos0 + t0 + t;
                        let row = &mut qkv[t * tot..(t + 1) * tot];
                        rope(
                            &mut row[..qd + kvd],
                            &cos[pos * half..(pos + 1) * half],
                            &sin[pos * half..(pos + 1) * half],
                            hs,
                        );
                        for j in 0..kvd {
                            let i = lbase + j * ld + pos;
                            // SAFETY: position `pos` (column of the cache) is this part's
                            // token alone; nothing reads the cache during the phase.
                            unsafe {
                                kcd.range(i, i + 1)[0] = row[qd + j];
                                vcd.range(i, i + 1)[0] = row[qd + kvd + j];
                            }
                        }
                    }
                    Ok(())
                })?;
            }
            drop(sp);
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
            // Tokens: wo + residual, then the FFN (its norm fused) + residual.
            let sp = profile::span("wo matmul");
            {
                let att = &att[..];
                let norm = Some(RmsNorm {
                    weight: &layer.ffn_norm,
                    eps: *eps,
                });
                let hl = hid.len() / (*cap).max(1);
                let (xd, od) = (
                    Disjoint::new(&mut x[..n * d]),
                    Disjoint::new(&mut o[..n * d]),
                );
                let hidd = Disjoint::new(&mut hid[..n * hl]);
                tk.run(&|p| {
                    let (t0, t1, m, s) = (p.t0, p.t1, p.t1 - p.t0, &mut *p.bufs);
                    // SAFETY: tokens t0..t1 belong to this part alone.
                    let (x, o, hid) = unsafe {
                        (
                            xd.range(t0 * d, t1 * d),
                            od.range(t0 * d, t1 * d),
                            hidd.range(t0 * hl, t1 * hl),
                        )
                    };
                    ex.mm_split(p.split, &layer.wo, &att[t0 * qd..t1 * qd], m, o, s, None)?;
                    add(x, o);
                    {
                        let _p = profile::span("ffn w1/w3 matmul + swiglu");
                        layer.ffn.up(ex, p.split, x, m, hid, s, norm)?;
                    }
                    let _p = profile::span("ffn w2 matmul");
                    ex.mm_split(p.split, &layer.ffn.w2, hid, m, o, s, None)?;
                    add(x, o);
                    Ok(())
                })?;
            }
            drop(sp);
        }
        let _p = profile::span("classifier");
        head.logits(ex, x, n, out, s)
    }
}
