//! The SsmMoe forward pass. Per layer five phases, each one job of the worker pool (or, with
//! one thread or a short batch, one call on the calling thread):
//!
//! 1. tokens: `in_proj` (the SSM norm fused into its staging);
//! 2. channels: causal depthwise conv + SiLU (each channel runs through the tokens in order);
//! 3. tokens: `x_proj`, `dt_proj`;
//! 4. channels: `softplus(Δ + bias)`, the selective-scan step, `y ⊙ SiLU(z)`;
//! 5. tokens: `out_proj` + residual, MoE norm, router, top-k, the routed experts, residual.
//!
//! A token phase gives each part a contiguous range of tokens and its own [`PartBufs`], so the
//! norms, the routing and the experts of a prefill are split too (one hand-off per phase, not
//! one per matmul). Every token's arithmetic — staging, kernels, routing, its experts summed in
//! expert order — depends on that token alone, and a channel phase gives each part its own
//! `Chans` (multiples of 16 channels); so the logits are bit-identical for any thread count.

use std::sync::Mutex;

use squish_core::{Error, Result};

use super::{Chans, Layer, PartBufs, SSM_PAR_MIN, SsmRt};
use crate::pool::{Disjoint, Pool};
use crate::runtime::phases::{Tokens, lock};
use crate::runtime::ssm_ops::{conv_silu, mul_silu, scan_t, softplus_bias};
use crate::runtime::vecops::{add, axpy};
use crate::runtime::{Exec, Logits, Split, profile};
use crate::scratch::RmsNorm;

/// Runs `f` on every non-empty channel part of a layer: on `pool` (each part locked), or in
/// order on this thread (no locks). A part is empty when there are more threads than 16-channel
/// blocks.
fn each_chans(chans: &mut [Mutex<Chans>], pool: Option<&Pool>, f: &(dyn Fn(&mut Chans) + Sync)) {
    let nonempty = |c: &mut Chans| {
        if c.c0 != c.c1 {
            f(c);
        }
    };
    match pool {
        Some(p) if p.threads() == chans.len() => {
            let chans = &*chans;
            p.run(&|part| nonempty(&mut lock(&chans[part])));
        }
        _ => chans
            .iter_mut()
            .for_each(|c| nonempty(c.get_mut().unwrap_or_else(|e| e.into_inner()))),
    }
}

/// One token range's rows of the buffers phase 5 reads and writes (`m` tokens).
struct MoeRows<'a> {
    /// `[m, di]` gated scan output.
    y: &'a [f32],
    /// `[m, d]` residual stream.
    x: &'a mut [f32],
    /// `[m, d]` out_proj output.
    o: &'a mut [f32],
    /// `[m, d]` MoE-normed input.
    hn: &'a mut [f32],
    /// `[m, E]` router logits → probabilities.
    rl: &'a mut [f32],
    /// `[m, d]` gathered inputs of one expert.
    g: &'a mut [f32],
    /// `[m, h_max]` one expert's hidden activations.
    hid: &'a mut [f32],
    /// `[m, d]` one expert's outputs.
    eo: &'a mut [f32],
    /// `[m, d]` gated sum of the expert outputs.
    moe: &'a mut [f32],
}

/// Phase 5 on `m` tokens: `x += out_proj(y)`; then `x += Σ_e gate_e · expert_e(RMSNorm(x))`
/// over each token's top-k experts (burn's tie rule: every expert with probability ≥ the k-th
/// largest), gates renormalised over the chosen, experts in index order.
#[allow(clippy::too_many_arguments)]
fn out_proj_moe(
    ex: &Exec,
    split: Split,
    l: &Layer,
    eps: f32,
    top_k: usize,
    m: usize,
    r: MoeRows<'_>,
    pb: &mut PartBufs,
) -> Result<()> {
    let PartBufs { s, sorted, routes } = pb;
    let d = l.out_proj.out();
    let md = m * d;
    ex.mm_split(split, &l.out_proj, r.y, m, r.o, s, None)?;
    add(&mut r.x[..md], &r.o[..md]);
    let sp = profile::span("moe norm + router + routing");
    for (hr, xr) in r.hn[..md]
        .chunks_exact_mut(d)
        .zip(r.x[..md].chunks_exact(d))
    {
        ex.ops
            .rmsnorm(hr, xr, &l.moe_norm, eps)
            .map_err(|e| Error::invalid(e.to_string()))?;
    }
    let ne = l.experts.len();
    ex.mm_split(split, &l.router, r.hn, m, r.rl, s, None)?;
    let kk = top_k.min(ne);
    routes.iter_mut().for_each(Vec::clear);
    for t in 0..m {
        let p = &mut r.rl[t * ne..(t + 1) * ne];
        ex.ops.softmax(p);
        let so = &mut sorted[..ne];
        so.copy_from_slice(p);
        so.sort_unstable_by(|a, b| b.total_cmp(a));
        let kth = so[kk - 1];
        let sum: f32 = p.iter().filter(|&&v| v >= kth).sum();
        for (e, &pv) in p.iter().enumerate() {
            if pv >= kth {
                routes[e].push((t, pv / sum));
            }
        }
    }
    drop(sp);
    let _sp = profile::span("experts (swiglu matmuls)");
    r.moe[..md].fill(0.0);
    for (expert, route) in l.experts.iter().zip(routes.iter()) {
        let me = route.len();
        if me == 0 {
            continue;
        }
        for (j, &(t, _)) in route.iter().enumerate() {
            r.g[j * d..(j + 1) * d].copy_from_slice(&r.hn[t * d..(t + 1) * d]);
        }
        expert.up(ex, split, r.g, me, r.hid, s, None)?;
        ex.mm_split(split, &expert.w2, r.hid, me, r.eo, s, None)?;
        for (j, &(t, gate)) in route.iter().enumerate() {
            axpy(
                &mut r.moe[t * d..(t + 1) * d],
                gate,
                &r.eo[j * d..(j + 1) * d],
            );
        }
    }
    add(&mut r.x[..md], &r.moe[..md]);
    Ok(())
}

impl SsmRt {
    /// The forward pass over `tokens` (continuing the recurrent state); writes the logits `out`
    /// asks for.
    pub(super) fn run(&mut self, ex: &Exec, tokens: &[u32], out: Logits<'_>) -> Result<()> {
        let SsmRt {
            head,
            layers,
            eps,
            k,
            ns,
            r,
            top_k,
            x,
            xz,
            xc,
            dbc,
            dt,
            delta,
            y,
            o,
            hn,
            rl,
            g,
            hid,
            eo,
            moe,
            parts,
            s,
            cap,
        } = self;
        let (n, d, k, ns, r, eps, top_k) = (tokens.len(), head.d, *k, *ns, *r, *eps, *top_k);
        let w = r + 2 * ns;
        let hmax = hid.len() / (*cap).max(1);
        {
            let _p = profile::span("embedding");
            head.embed(tokens, x)?;
        }
        for l in layers.iter_mut() {
            let di = l.di;
            let mut tk = Tokens::new(ex, n, n * d * di, parts);
            let chans_pool = ex.pool_for(n * di * ns, SSM_PAR_MIN);

            // 1. tokens: in_proj, the SSM norm fused.
            let sp = profile::span("in_proj matmul");
            {
                let (xr, xzd) = (&x[..], Disjoint::new(&mut xz[..n * 2 * di]));
                let norm = RmsNorm {
                    weight: &l.ssm_norm,
                    eps,
                };
                tk.run(&|p| {
                    let (t0, t1) = (p.t0, p.t1);
                    // SAFETY: tokens t0..t1 belong to this part alone.
                    let xzr = unsafe { xzd.range(t0 * 2 * di, t1 * 2 * di) };
                    let xs = &xr[t0 * d..t1 * d];
                    ex.mm_split(
                        p.split,
                        &l.in_proj,
                        xs,
                        t1 - t0,
                        xzr,
                        &mut p.bufs.s,
                        Some(norm),
                    )
                })?;
            }
            drop(sp);

            // 2. channels: causal conv + SiLU over the rolling window.
            let sp = profile::span("conv + silu");
            {
                let (xz, xcd) = (&xz[..], Disjoint::new(&mut xc[..n * di]));
                each_chans(&mut l.chans, chans_pool, &|ch| {
                    let (c0, c1) = (ch.c0, ch.c1);
                    for t in 0..n {
                        let xin = &xz[t * 2 * di + c0..t * 2 * di + c1];
                        // SAFETY: token t's channels c0..c1 belong to this part alone.
                        let xo = unsafe { xcd.range(t * di + c0, t * di + c1) };
                        conv_silu(ex.level, &ch.win, &ch.taps, &ch.conv_b, xin, xo);
                        if k > 1 {
                            let w = c1 - c0;
                            ch.win.copy_within(w.., 0);
                            ch.win[(k - 2) * w..].copy_from_slice(xin);
                        }
                    }
                });
            }
            drop(sp);

            // 3. tokens: x_proj → (dt, B, C); dt_proj → Δ before the softplus.
            let sp = profile::span("x_proj + dt_proj matmul");
            {
                let xcr = &xc[..];
                let dbcd = Disjoint::new(&mut dbc[..n * w]);
                let dtd = Disjoint::new(&mut dt[..n * r]);
                let dld = Disjoint::new(&mut delta[..n * di]);
                tk.run(&|p| {
                    let (t0, t1, m) = (p.t0, p.t1, p.t1 - p.t0);
                    let s = &mut p.bufs.s;
                    // SAFETY: tokens t0..t1 belong to this part alone.
                    let (dbc, dt, dl) = unsafe {
                        (
                            dbcd.range(t0 * w, t1 * w),
                            dtd.range(t0 * r, t1 * r),
                            dld.range(t0 * di, t1 * di),
                        )
                    };
                    ex.mm_split(p.split, &l.x_proj, &xcr[t0 * di..t1 * di], m, dbc, s, None)?;
                    for j in 0..m {
                        dt[j * r..(j + 1) * r].copy_from_slice(&dbc[j * w..j * w + r]);
                    }
                    ex.mm_split(p.split, &l.dt_proj, dt, m, dl, s, None)
                })?;
            }
            drop(sp);

            // 4. channels: softplus, the selective-scan step, the SiLU(z) gate.
            let sp = profile::span("softplus + scan + gate");
            {
                let (xz, xc, dbc) = (&xz[..], &xc[..], &dbc[..]);
                let dd = Disjoint::new(&mut delta[..n * di]);
                let yd = Disjoint::new(&mut y[..n * di]);
                each_chans(&mut l.chans, chans_pool, &|ch| {
                    let (c0, c1) = (ch.c0, ch.c1);
                    for t in 0..n {
                        // SAFETY: token t's channels c0..c1 belong to this part alone.
                        let (dlt, yt) = unsafe {
                            (
                                dd.range(t * di + c0, t * di + c1),
                                yd.range(t * di + c0, t * di + c1),
                            )
                        };
                        softplus_bias(ex.level, dlt, &ch.dt_bias);
                        let (b, c) = dbc[t * w + r..(t + 1) * w].split_at(ns);
                        let xt = &xc[t * di + c0..t * di + c1];
                        scan_t(ex.level, xt, dlt, b, c, &ch.a, &ch.dskip, &mut ch.h, yt);
                        let z0 = t * 2 * di + di;
                        mul_silu(ex.level, yt, &xz[z0 + c0..z0 + c1]);
                    }
                });
            }
            drop(sp);

            // 5. tokens: out_proj + residual, then the MoE + residual.
            let sp = profile::span("out_proj matmul");
            {
                let yr = &y[..];
                let ne = l.experts.len();
                let [xd, od, hnd, gd, eod, moed] =
                    [&mut *x, &mut *o, &mut *hn, &mut *g, &mut *eo, &mut *moe]
                        .map(|b| Disjoint::new(&mut b[..n * d]));
                let rld = Disjoint::new(&mut rl[..n * ne]);
                let hidd = Disjoint::new(&mut hid[..n * hmax]);
                tk.run(&|p| {
                    let (t0, t1) = (p.t0, p.t1);
                    let (a, b) = (t0 * d, t1 * d);
                    // SAFETY: tokens t0..t1 belong to this part alone, and so do its rows of the
                    // gather buffers (a range routes at most its own tokens to an expert).
                    let rows = unsafe {
                        MoeRows {
                            y: &yr[t0 * di..t1 * di],
                            x: xd.range(a, b),
                            o: od.range(a, b),
                            hn: hnd.range(a, b),
                            rl: rld.range(t0 * ne, t1 * ne),
                            g: gd.range(a, b),
                            hid: hidd.range(t0 * hmax, t1 * hmax),
                            eo: eod.range(a, b),
                            moe: moed.range(a, b),
                        }
                    };
                    out_proj_moe(ex, p.split, l, eps, top_k, t1 - t0, rows, p.bufs)
                })?;
            }
            drop(sp);
        }
        let _p = profile::span("classifier");
        head.logits(ex, x, n, out, s)
    }
}
