//! The per-row kernels of the fused selective scan ([`super::scan_kernel`]): one batch row's
//! forward and backward over channel blocks of [`W`] lanes, and the vectorizable `exp`.

use super::lanes::isa_variants;
use super::scan_kernel::{ScanBufs, ScanDims, W};

/// One block of channel lanes, aligned to a cache line (one AVX-512 register never straddles
/// two lines).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Lanes(pub(crate) [f32; W]);

impl Lanes {
    const ZERO: Self = Lanes([0.0; W]);
}

impl std::ops::Deref for Lanes {
    type Target = [f32; W];
    #[inline(always)]
    fn deref(&self) -> &[f32; W] {
        &self.0
    }
}

impl std::ops::DerefMut for Lanes {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [f32; W] {
        &mut self.0
    }
}

/// `exp` of every lane: `2^j · p(r)` with `j = round(x·log2 e)`, `r = x − j·ln 2` (Cody–Waite,
/// |r| ≤ ½ ln 2) and `p` the degree-7 Taylor polynomial of `e^r` (truncation < 1e-8). Inputs are
/// clamped to `[−87.3, 87.3]`, so very negative inputs give ~1e-38 instead of 0.
#[inline(always)]
pub fn exp_lanes(x: &[f32; W]) -> [f32; W] {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // few mantissa bits: j·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    const C: [f32; 7] = [
        1.0 / 5040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
    ];
    let mut out = [0.0; W];
    for k in 0..W {
        let v = if x[k] < -87.3 { -87.3 } else { x[k] };
        let v = if v > 87.3 { 87.3 } else { v };
        let t = v * LOG2E + MAGIC;
        let j = t - MAGIC;
        let r = (v - j * LN2_HI) - j * LN2_LO;
        let ji = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
        let scale = f32::from_bits(((ji + 127) << 23) as u32);
        let mut p = C[0];
        for &c in &C[1..] {
            p = p * r + c;
        }
        out[k] = (p * r + 1.0) * scale;
    }
    out
}

/// Sum of the lanes in a fixed pairwise order.
#[inline(always)]
fn hsum(v: &Lanes) -> f32 {
    let mut s = v.0;
    let mut w = W / 2;
    while w > 0 {
        for k in 0..w {
            s[k] += s[k + w];
        }
        w /= 2;
    }
    s[0]
}

/// `A` and `D` regrouped per channel block: `a[blk·N + n][k] = A[blk·W + k, n]`, zero-padded.
pub(crate) struct Blocked {
    a: Vec<Lanes>,
    d: Vec<Lanes>,
}

impl Blocked {
    pub(crate) fn new(dims: ScanDims, a: &[f32], d: &[f32]) -> Self {
        let (di, n) = (dims.d_inner, dims.n);
        let nblk = di.div_ceil(W);
        let mut ab = vec![Lanes::ZERO; nblk * n];
        let mut db = vec![Lanes::ZERO; nblk];
        for i in 0..di {
            let (blk, k) = (i / W, i % W);
            for s in 0..n {
                ab[blk * n + s][k] = a[i * n + s];
            }
            db[blk][k] = d[i];
        }
        Blocked { a: ab, d: db }
    }
}

/// One block's `[W]` slice of row `t` of a `[seq, d_inner]` buffer, zero-padded.
#[inline(always)]
fn load(buf: &[f32], t: usize, di: usize, i0: usize, w: usize) -> [f32; W] {
    let row = &buf[t * di + i0..t * di + i0 + w];
    if let Ok(full) = <&[f32; W]>::try_from(row) {
        return *full; // a full block: one vector load
    }
    let mut v = [0.0; W];
    for (dst, src) in v.iter_mut().zip(row) {
        *dst = *src;
    }
    v
}

/// Forward of block `blk` of one batch row: writes its lanes of `y [seq, d_inner]`; with `keep`,
/// also every `h_t` and `exp(Δ_t A)` into `keep = (h [seq·N], decay [seq·N])` (the backward's
/// recomputation).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_row(
    dims: ScanDims,
    blocked: &Blocked,
    x: &[f32],     // [seq, d_inner]
    delta: &[f32], // [seq, d_inner]
    b: &[f32],     // [seq, n]
    c: &[f32],     // [seq, n]
    blk: usize,
    y: Option<&mut [f32]>, // [seq, d_inner]
    mut keep: Option<(&mut [Lanes], &mut [Lanes])>,
    h: &mut [Lanes], // [n] scratch
) {
    let (t_len, di, n) = (dims.seq, dims.d_inner, dims.n);
    let (i0, w) = (blk * W, W.min(di - blk * W));
    let a = &blocked.a[blk * n..(blk + 1) * n];
    let dd = &blocked.d[blk];
    h.fill(Lanes::ZERO);
    let mut y = y;
    for t in 0..t_len {
        let xv = load(x, t, di, i0, w);
        let dv = load(delta, t, di, i0, w);
        let mut dx = [0.0; W];
        for k in 0..W {
            dx[k] = dv[k] * xv[k];
        }
        let mut acc = [0.0; W];
        for s in 0..n {
            let (bs, cs) = (b[t * n + s], c[t * n + s]);
            let a_s = a[s].0;
            let mut arg = [0.0; W];
            for k in 0..W {
                arg[k] = dv[k] * a_s[k];
            }
            let da = exp_lanes(&arg);
            let mut hs = h[s].0; // a local copy: nothing for the vectorizer to alias
            for k in 0..W {
                hs[k] = da[k] * hs[k] + dx[k] * bs;
                acc[k] += hs[k] * cs;
            }
            h[s] = Lanes(hs);
            if let Some((kh, kd)) = keep.as_mut() {
                kh[t * n + s] = Lanes(hs);
                kd[t * n + s] = Lanes(da);
            }
        }
        if let Some(y) = y.as_deref_mut() {
            for k in 0..w {
                y[t * di + i0 + k] = acc[k] + dd[k] * xv[k];
            }
        }
    }
}

/// Per-row outputs of the backward.
struct RowGrads<'a> {
    x: &'a mut [f32],     // [seq, d_inner]
    delta: &'a mut [f32], // [seq, d_inner]
    b: &'a mut [f32],     // [seq, n]
    c: &'a mut [f32],     // [seq, n]
    a: &'a mut [f32],     // [d_inner, n]: this row's share
    d: &'a mut [f32],     // [d_inner]: this row's share
}

/// Scratch of one thread's backward.
struct Scratch {
    hs: Vec<Lanes>,      // [seq·N]: h_t of the current block
    das: Vec<Lanes>,     // [seq·N]: exp(Δ_t A) of the current block
    h: Vec<Lanes>,       // [N]
    g: Vec<Lanes>,       // [N]: ∂L/∂h_t
    ga: Vec<Lanes>,      // [N]: ∂A of the current block
    cb: Vec<[Lanes; 2]>, // [seq·N]: per-lane sums over blocks of (∂C, ∂B) terms
}

impl Scratch {
    fn new(dims: ScanDims) -> Self {
        let (tn, n) = (dims.seq * dims.n, dims.n);
        Scratch {
            hs: vec![Lanes::ZERO; tn],
            das: vec![Lanes::ZERO; tn],
            h: vec![Lanes::ZERO; n],
            g: vec![Lanes::ZERO; n],
            ga: vec![Lanes::ZERO; n],
            cb: vec![[Lanes::ZERO; 2]; tn],
        }
    }
}

/// Backward of one batch row, block by block (fixed order). The `∂B`/`∂C` terms are summed per
/// lane over the blocks, then over the lanes once per `(t, n)`.
#[inline(always)]
fn backward_row(
    dims: ScanDims,
    blocked: &Blocked,
    inp: [&[f32]; 5], // x, delta [seq, d_inner]; b, c [seq, n]; dy [seq, d_inner]
    out: RowGrads,
    sc: &mut Scratch,
) {
    let [x, delta, b, c, dy] = inp;
    let (t_len, di, n) = (dims.seq, dims.d_inner, dims.n);
    let Scratch {
        hs,
        das,
        h,
        g,
        ga,
        cb,
    } = sc;
    cb.fill([Lanes::ZERO; 2]);
    for blk in 0..di.div_ceil(W) {
        let (i0, w) = (blk * W, W.min(di - blk * W));
        forward_row(dims, blocked, x, delta, b, c, blk, None, Some((hs, das)), h);
        ga.fill(Lanes::ZERO);
        let a = &blocked.a[blk * n..(blk + 1) * n];
        let dd = &blocked.d[blk];
        g.fill(Lanes::ZERO);
        let mut gd = [0.0; W];
        for t in (0..t_len).rev() {
            let xv = load(x, t, di, i0, w);
            let dv = load(delta, t, di, i0, w);
            let dyv = load(dy, t, di, i0, w);
            let mut dx = [0.0; W];
            for k in 0..W {
                dx[k] = dv[k] * xv[k];
                gd[k] += dyv[k] * xv[k];
            }
            let (mut gdx, mut gdl) = ([0.0; W], [0.0; W]);
            for s in 0..n {
                let (bs, cs) = (b[t * n + s], c[t * n + s]);
                // Values in locals, written back after the lane loop: no aliasing for the
                // vectorizer to prove.
                let (ht, da, a_s) = (hs[t * n + s].0, das[t * n + s].0, a[s].0);
                let hp = if t > 0 {
                    hs[(t - 1) * n + s].0
                } else {
                    [0.0; W]
                };
                let (mut gs, mut gas) = (g[s].0, ga[s].0);
                let [Lanes(mut pc), Lanes(mut pb)] = cb[t * n + s];
                for k in 0..W {
                    let gk = gs[k] + dyv[k] * cs;
                    pc[k] += dyv[k] * ht[k];
                    pb[k] += gk * dx[k];
                    gdx[k] += gk * bs;
                    let q = gk * hp[k] * da[k];
                    gdl[k] += q * a_s[k];
                    gas[k] += q * dv[k];
                    gs[k] = gk * da[k];
                }
                (g[s], ga[s]) = (Lanes(gs), Lanes(gas));
                cb[t * n + s] = [Lanes(pc), Lanes(pb)];
            }
            for k in 0..w {
                out.x[t * di + i0 + k] = gdx[k] * dv[k] + dyv[k] * dd[k];
                out.delta[t * di + i0 + k] = gdx[k] * xv[k] + gdl[k];
            }
        }
        for k in 0..w {
            for (s, gas) in ga.iter().enumerate() {
                out.a[(i0 + k) * n + s] = gas[k];
            }
            out.d[i0 + k] = gd[k];
        }
    }
    for (j, [pc, pb]) in cb.iter().enumerate() {
        out.c[j] = hsum(pc);
        out.b[j] = hsum(pb);
    }
}

/// Forward of rows `row0..`; `y` holds exactly those rows `[rows, seq, d_inner]`.
#[inline(always)]
pub(crate) fn forward_rows(
    dims: ScanDims,
    blocked: &Blocked,
    inp: &ScanBufs,
    row0: usize,
    y: &mut [f32],
) {
    let (td, tn) = (dims.seq * dims.d_inner, dims.seq * dims.n);
    let mut h = vec![Lanes::ZERO; dims.n];
    for (r, yr) in y.chunks_mut(td).enumerate() {
        let row = row0 + r;
        let (x, delta) = (&inp.x[row * td..][..td], &inp.delta[row * td..][..td]);
        let (b, c) = (&inp.b[row * tn..][..tn], &inp.c[row * tn..][..tn]);
        for blk in 0..dims.d_inner.div_ceil(W) {
            forward_row(dims, blocked, x, delta, b, c, blk, Some(yr), None, &mut h);
        }
    }
}

/// Per-thread output chunks of the backward (rows `row0..row0 + rows`).
pub(crate) struct Chunk<'a> {
    /// First batch row of the chunk.
    pub(crate) row0: usize,
    /// `∂x [rows, seq, d_inner]`.
    pub(crate) x: &'a mut [f32],
    /// `∂Δ [rows, seq, d_inner]`.
    pub(crate) delta: &'a mut [f32],
    /// `∂B [rows, seq, n]`.
    pub(crate) b: &'a mut [f32],
    /// `∂C [rows, seq, n]`.
    pub(crate) c: &'a mut [f32],
    /// Per-row shares of `∂A [rows, d_inner, n]`.
    pub(crate) a: &'a mut [f32],
    /// Per-row shares of `∂D [rows, d_inner]`.
    pub(crate) d: &'a mut [f32],
}

/// Backward of the rows of `ch`.
#[inline(always)]
pub(crate) fn backward_rows(
    dims: ScanDims,
    blocked: &Blocked,
    inp: &ScanBufs,
    dy: &[f32],
    ch: Chunk,
) {
    let (td, tn) = (dims.seq * dims.d_inner, dims.seq * dims.n);
    let (an, di) = (dims.d_inner * dims.n, dims.d_inner);
    let mut scratch = Scratch::new(dims);
    let rows = ch.x.len() / td.max(1);
    let mut outs =
        ch.x.chunks_mut(td)
            .zip(ch.delta.chunks_mut(td))
            .zip(ch.b.chunks_mut(tn).zip(ch.c.chunks_mut(tn)))
            .zip(ch.a.chunks_mut(an).zip(ch.d.chunks_mut(di)));
    for r in 0..rows {
        let row = ch.row0 + r;
        let (((x, delta), (b, c)), (a, d)) = outs.next().expect("one chunk per row");
        let ins = [
            &inp.x[row * td..][..td],
            &inp.delta[row * td..][..td],
            &inp.b[row * tn..][..tn],
            &inp.c[row * tn..][..tn],
            &dy[row * td..][..td],
        ];
        let out = RowGrads {
            x,
            delta,
            b,
            c,
            a,
            d,
        };
        backward_row(dims, blocked, ins, out, &mut scratch);
    }
}

isa_variants!(pub(crate) forward_rows, forward_rows_avx2, forward_rows_avx512,
    (dims: ScanDims, blocked: &Blocked, inp: &ScanBufs, row0: usize, y: &mut [f32]));
isa_variants!(pub(crate) backward_rows, backward_rows_avx2, backward_rows_avx512,
    (dims: ScanDims, blocked: &Blocked, inp: &ScanBufs, dy: &[f32], ch: Chunk));
