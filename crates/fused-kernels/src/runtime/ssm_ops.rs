//! Element-wise SSM kernels of the runtime, vectorised over `d_inner` (8 channels
//! per AVX2 register; the bodies are in `avx2/ssm.rs`) with a scalar path chosen
//! by [`SimdLevel`]:
//! causal depthwise conv + SiLU, `softplus(v + bias)`, `y ⊙ SiLU(z)` and the
//! selective-scan step on a *transposed* state `h [N, d_inner]` (so the scan
//! needs no horizontal sums).
//!
//! Bounds (AVX2 vs scalar, tested below): the polynomial `exp` / `ln` are within
//! ≈ 2e-7 relative of libm, so every output is within `1e-5 · (1 + |value|)`.

use crate::dispatch::SimdLevel;

/// `v · sigmoid(v)`.
#[inline]
pub(crate) fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// `ln(1 + eᵛ)` (burn's softplus, β = 1).
#[inline]
pub(crate) fn softplus(v: f32) -> f32 {
    if v > 20.0 { v } else { v.exp().ln_1p() }
}

fn avx2(level: SimdLevel) -> bool {
    crate::dispatch::has_avx2(level)
}

/// `out[i] = SiLU(bias[i] + Σ_{j<k−1} win[j, i]·taps[j, i] + xin[i]·taps[k−1, i])`
/// with `win [k−1, di]` (oldest first) and `taps [k, di]` (transposed conv weight).
pub(crate) fn conv_silu(
    level: SimdLevel,
    win: &[f32],
    taps: &[f32],
    bias: &[f32],
    xin: &[f32],
    out: &mut [f32],
) {
    let di = out.len();
    let k = taps.len() / di.max(1);
    assert!(
        taps.len() == k * di && k >= 1 && win.len() == (k - 1) * di && bias.len() == di,
        "conv_silu: shapes"
    );
    assert!(xin.len() == di);
    #[cfg(target_arch = "x86_64")]
    if avx2(level) {
        // SAFETY: level ≥ AVX2 was verified against the CPU; lengths asserted above.
        unsafe { crate::avx2::ssm::conv_silu(win, taps, bias, xin, out, k) };
        return;
    }
    for i in 0..di {
        let mut acc = bias[i];
        for j in 0..k - 1 {
            acc += win[j * di + i] * taps[j * di + i];
        }
        acc += xin[i] * taps[(k - 1) * di + i];
        out[i] = silu(acc);
    }
}

/// `v[i] = softplus(v[i] + bias[i])`.
pub(crate) fn softplus_bias(level: SimdLevel, v: &mut [f32], bias: &[f32]) {
    assert!(v.len() == bias.len(), "softplus_bias: shapes");
    #[cfg(target_arch = "x86_64")]
    if avx2(level) {
        // SAFETY: level ≥ AVX2 was verified against the CPU; lengths asserted above.
        unsafe { crate::avx2::ssm::softplus_bias(v, bias) };
        return;
    }
    for (x, b) in v.iter_mut().zip(bias) {
        *x = softplus(*x + b);
    }
}

/// `y[i] *= SiLU(z[i])`.
pub(crate) fn mul_silu(level: SimdLevel, y: &mut [f32], z: &[f32]) {
    assert!(y.len() == z.len(), "mul_silu: shapes");
    #[cfg(target_arch = "x86_64")]
    if avx2(level) {
        // SAFETY: level ≥ AVX2 was verified against the CPU; lengths asserted above.
        unsafe { crate::avx2::ssm::mul_silu(y, z) };
        return;
    }
    for (a, b) in y.iter_mut().zip(z) {
        *a *= silu(*b);
    }
}

/// One selective-scan step on transposed state: for every channel `i` and state
/// `k`: `h[k, i] = exp(Δ_i·A[k, i])·h[k, i] + Δ_i·x_i·B_k`,
/// `y_i = Σ_k C_k·h[k, i] + D_i·x_i`. Shapes: `x, delta, dskip, y [di]`,
/// `b, c [N]`, `a, h [N, di]`.
pub(crate) fn scan_t(
    level: SimdLevel,
    x: &[f32],
    delta: &[f32],
    b: &[f32],
    c: &[f32],
    a: &[f32],
    dskip: &[f32],
    h: &mut [f32],
    y: &mut [f32],
) {
    let (di, ns) = (x.len(), b.len());
    assert!(
        delta.len() == di && dskip.len() == di && y.len() == di && c.len() == ns,
        "scan_t: shapes"
    );
    assert!(
        a.len() == ns * di && h.len() == ns * di,
        "scan_t: state shape"
    );
    #[cfg(target_arch = "x86_64")]
    if avx2(level) {
        // SAFETY: level ≥ AVX2 was verified against the CPU; lengths asserted above.
        unsafe { crate::avx2::ssm::scan_t(x, delta, b, c, a, dskip, h, y) };
        return;
    }
    for i in 0..di {
        y[i] = scan_channel(i, x, delta, b, c, a, dskip, h);
    }
}

/// The scalar scan step of channel `i` (see [`scan_t`]); updates its `N` states
/// and returns `y_i`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn scan_channel(
    i: usize,
    x: &[f32],
    delta: &[f32],
    b: &[f32],
    c: &[f32],
    a: &[f32],
    dskip: &[f32],
    h: &mut [f32],
) -> f32 {
    let (di, ns) = (x.len(), b.len());
    let (dt, xi) = (delta[i], x[i]);
    let mut acc = 0f32;
    for k in 0..ns {
        let hv = (dt * a[k * di + i]).exp() * h[k * di + i] + dt * xi * b[k];
        h[k * di + i] = hv;
        acc += hv * c[k];
    }
    acc + dskip[i] * xi
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::data::Rng;

    fn rnd(rng: &mut Rng, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * a).collect()
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}: {x} vs {y}"
            );
        }
    }

    /// Every AVX2 SSM kernel equals the scalar path within `1e-5·(1+|v|)` over
    /// widths 1, 17, 64, 172 and random others.
    #[test]
    fn ssm_kernels_avx2_match_scalar() {
        let simd = crate::dispatch::detect();
        if !avx2(simd) {
            return;
        }
        let mut rng = Rng::new(5);
        let mut widths = vec![1usize, 7, 8, 9, 17, 64, 172];
        widths.extend((0..20).map(|_| 1 + rng.below(200)));
        for &di in &widths {
            for k in [1usize, 2, 4] {
                let win = rnd(&mut rng, (k - 1) * di, 2.0);
                let taps = rnd(&mut rng, k * di, 1.0);
                let (bias, xin) = (rnd(&mut rng, di, 0.5), rnd(&mut rng, di, 3.0));
                let mut o = [vec![0.0; di], vec![0.0; di]];
                for (lv, o) in [SimdLevel::Scalar, simd].into_iter().zip(o.iter_mut()) {
                    conv_silu(lv, &win, &taps, &bias, &xin, o);
                }
                close(&o[1], &o[0], "conv_silu");
            }
            // softplus over the whole interesting range, incl. > 20 and very negative.
            let v = rnd(&mut rng, di, 40.0);
            let bias = rnd(&mut rng, di, 1.0);
            let mut o = [v.clone(), v.clone()];
            softplus_bias(SimdLevel::Scalar, &mut o[0], &bias);
            softplus_bias(simd, &mut o[1], &bias);
            close(&o[1], &o[0], "softplus");
            let z = rnd(&mut rng, di, 30.0);
            let mut o = [v.clone(), v.clone()];
            mul_silu(SimdLevel::Scalar, &mut o[0], &z);
            mul_silu(simd, &mut o[1], &z);
            close(&o[1], &o[0], "mul_silu");
            for ns in [1usize, 16] {
                let x = rnd(&mut rng, di, 2.0);
                let delta: Vec<f32> = rnd(&mut rng, di, 1.0).iter().map(|v| v.abs()).collect();
                let (b, c) = (rnd(&mut rng, ns, 1.0), rnd(&mut rng, ns, 1.0));
                let a: Vec<f32> = rnd(&mut rng, ns * di, 4.0)
                    .iter()
                    .map(|v| -v.abs())
                    .collect();
                let d = rnd(&mut rng, di, 1.0);
                let h0 = rnd(&mut rng, ns * di, 1.0);
                let mut h = [h0.clone(), h0];
                let mut y = [vec![0.0; di], vec![0.0; di]];
                for _ in 0..3 {
                    for (j, lv) in [SimdLevel::Scalar, simd].into_iter().enumerate() {
                        scan_t(lv, &x, &delta, &b, &c, &a, &d, &mut h[j], &mut y[j]);
                    }
                }
                close(&y[1], &y[0], "scan y");
                close(&h[1], &h[0], "scan h");
            }
        }
    }
}
