//! Unit tests of the fused scan kernels against a plain f64 reference, and their determinism.

use super::*;
use crate::data::Rng;

struct Case {
    dims: ScanDims,
    x: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Vec<f32>,
    dy: Vec<f32>,
}

impl Case {
    fn new(dims: ScanDims, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut v = |len: usize, lo: f32, hi: f32| -> Vec<f32> {
            (0..len).map(|_| lo + (hi - lo) * rng.f32()).collect()
        };
        let (bt, di, n) = (dims.batch * dims.seq, dims.d_inner, dims.n);
        Case {
            dims,
            x: v(bt * di, -1.0, 1.0),
            delta: v(bt * di, 0.001, 0.3),
            a: v(di * n, -3.0, -0.05),
            b: v(bt * n, -1.0, 1.0),
            c: v(bt * n, -1.0, 1.0),
            d: v(di, 0.5, 1.5),
            dy: v(bt * di, -1.0, 1.0),
        }
    }

    fn bufs(&self) -> ScanBufs<'_> {
        ScanBufs {
            x: &self.x,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: &self.d,
        }
    }

    /// Straightforward f64 forward and backward: (y, grads).
    fn reference(&self) -> (Vec<f64>, [Vec<f64>; 6]) {
        let ScanDims {
            batch,
            seq,
            d_inner: di,
            n,
        } = self.dims;
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let (x, dl, a, b, c, d, dy) = (
            f(&self.x),
            f(&self.delta),
            f(&self.a),
            f(&self.b),
            f(&self.c),
            f(&self.d),
            f(&self.dy),
        );
        let mut y = vec![0.0; batch * seq * di];
        let mut g = [
            vec![0.0; x.len()],
            vec![0.0; x.len()],
            vec![0.0; a.len()],
            vec![0.0; b.len()],
            vec![0.0; c.len()],
            vec![0.0; d.len()],
        ];
        for bi in 0..batch {
            for i in 0..di {
                let xi = |t: usize| (bi * seq + t) * di + i;
                let bn = |t: usize, s: usize| (bi * seq + t) * n + s;
                let mut hs = vec![vec![0.0; n]; seq + 1]; // hs[t + 1] = h_t
                for t in 0..seq {
                    let mut acc = d[i] * x[xi(t)];
                    for s in 0..n {
                        let da = (dl[xi(t)] * a[i * n + s]).exp();
                        hs[t + 1][s] = da * hs[t][s] + dl[xi(t)] * x[xi(t)] * b[bn(t, s)];
                        acc += hs[t + 1][s] * c[bn(t, s)];
                    }
                    y[xi(t)] = acc;
                }
                let mut gh = vec![0.0; n];
                for t in (0..seq).rev() {
                    let g_y = dy[xi(t)];
                    g[5][i] += g_y * x[xi(t)];
                    g[0][xi(t)] += g_y * d[i];
                    for s in 0..n {
                        let gs = gh[s] + g_y * c[bn(t, s)];
                        g[4][bn(t, s)] += g_y * hs[t + 1][s];
                        let u = dl[xi(t)] * x[xi(t)];
                        g[3][bn(t, s)] += gs * u;
                        g[0][xi(t)] += gs * b[bn(t, s)] * dl[xi(t)];
                        g[1][xi(t)] += gs * b[bn(t, s)] * x[xi(t)];
                        let da = (dl[xi(t)] * a[i * n + s]).exp();
                        let q = gs * hs[t][s] * da;
                        g[1][xi(t)] += q * a[i * n + s];
                        g[2][i * n + s] += q * dl[xi(t)];
                        gh[s] = gs * da;
                    }
                }
            }
        }
        (y, g)
    }
}

/// max |got − want| / max |want|.
fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(&g, w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

#[test]
fn exp_lanes_matches_std_exp() {
    let mut worst = 0.0f64;
    for step in 0..20_000 {
        let mut v = [0.0f32; W];
        for (k, x) in v.iter_mut().enumerate() {
            *x = -87.0 + 97.0 * ((step * W + k) as f32 / (20_000 * W) as f32);
        }
        let e = exp_lanes(&v);
        for k in 0..W {
            let want = (v[k] as f64).exp();
            worst = worst.max((e[k] as f64 - want).abs() / want);
        }
    }
    assert!(worst < 3e-7, "exp relative error {worst}");
    assert!(exp_lanes(&[-1000.0; W])[0] < 1e-37);
}

#[test]
fn kernel_matches_f64_reference() {
    let mut seed = 1;
    for (di, n, seq) in [(1, 1, 1), (17, 5, 7), (40, 16, 30), (3, 2, 64)] {
        seed += 1;
        let case = Case::new(
            ScanDims {
                batch: 3,
                seq,
                d_inner: di,
                n,
            },
            seed,
        );
        let isa = ScanIsa::detect();
        let y = scan_forward(case.dims, &case.bufs(), 2, isa);
        let g = scan_backward(case.dims, &case.bufs(), &case.dy, 2, isa);
        let (ry, rg) = case.reference();
        let errs = [
            rel_err(&y, &ry),
            rel_err(&g.x, &rg[0]),
            rel_err(&g.delta, &rg[1]),
            rel_err(&g.a, &rg[2]),
            rel_err(&g.b, &rg[3]),
            rel_err(&g.c, &rg[4]),
            rel_err(&g.d, &rg[5]),
        ];
        for (name, e) in ["y", "x", "delta", "a", "b", "c", "d"].iter().zip(errs) {
            assert!(
                e <= 1e-5,
                "{name}: relative error {e} at d_inner {di}, n {n}, seq {seq}"
            );
        }
    }
}

#[test]
fn bit_identical_for_any_thread_count_and_isa() {
    let case = Case::new(
        ScanDims {
            batch: 5,
            seq: 19,
            d_inner: 37,
            n: 16,
        },
        7,
    );
    let base_y = scan_forward(case.dims, &case.bufs(), 1, ScanIsa::Baseline);
    let base_g = scan_backward(case.dims, &case.bufs(), &case.dy, 1, ScanIsa::Baseline);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    for isa in ScanIsa::available() {
        for threads in 1..=6 {
            let y = scan_forward(case.dims, &case.bufs(), threads, isa);
            let g = scan_backward(case.dims, &case.bufs(), &case.dy, threads, isa);
            assert_eq!(bits(&y), bits(&base_y), "y, {isa:?}, {threads} threads");
            for (got, want) in [
                (&g.x, &base_g.x),
                (&g.delta, &base_g.delta),
                (&g.a, &base_g.a),
                (&g.b, &base_g.b),
                (&g.c, &base_g.c),
                (&g.d, &base_g.d),
            ] {
                assert_eq!(bits(got), bits(want), "grads, {isa:?}, {threads} threads");
            }
        }
    }
}
