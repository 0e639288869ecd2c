//! Portable scalar reference kernels: the ground truth for every SIMD path.
//!
//! Conventions shared by all `*_rows` kernels in this crate: activations are
//! `[n, ld]` row-major (one token per row), the kernel computes output rows
//! `r0..r1` for every token and writes `y[t * ldy + (r - r0)]`.
//!
//! One reference kernel per storage type on purpose (f32, f16 bits, each quantized layout): the
//! loops look alike, the element decode is the thing each one pins down.

use crate::pack::{CHUNK, QuantRepr};
use half::f16;

/// Dense f32: `y[t, r] = Σ_c w[r, c] · x[t, c]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn f32_rows(
    w: &[f32], // [out, inp]
    inp: usize,
    x: &[f32], // [n, ld]
    ld: usize,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    for t in 0..n {
        let xt = &x[t * ld..t * ld + inp];
        for r in r0..r1 {
            let row = &w[r * inp..(r + 1) * inp];
            y[t * ldy + r - r0] = row.iter().zip(xt).map(|(a, b)| a * b).sum();
        }
    }
}

/// Dense f16 (bit patterns) with f32 accumulation.
#[allow(clippy::too_many_arguments)]
pub(crate) fn f16_rows(
    w: &[u16], // [out, inp]
    inp: usize,
    x: &[f32], // [n, ld]
    ld: usize,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    for t in 0..n {
        let xt = &x[t * ld..t * ld + inp];
        for r in r0..r1 {
            let row = &w[r * inp..(r + 1) * inp];
            y[t * ldy + r - r0] = row
                .iter()
                .zip(xt)
                .map(|(a, b)| f16::from_bits(*a).to_f32() * b)
                .sum();
        }
    }
}

/// Unsigned codes of one 32-element chunk of row `r`, chunk index `ch` (through `q.lut` when set).
#[inline]
pub(crate) fn chunk_codes(q: &QuantRepr, r: usize, ch: usize) -> [u8; CHUNK] {
    let mut out = [0u8; CHUNK];
    let row = &q.codes[r * q.row_bytes..(r + 1) * q.row_bytes];
    if q.bits == 8 {
        out.copy_from_slice(&row[ch * CHUNK..(ch + 1) * CHUNK]);
    } else {
        let b = &row[ch * CHUNK / 2..(ch + 1) * CHUNK / 2];
        for i in 0..CHUNK / 2 {
            out[i] = b[i] & 0xF;
            out[i + CHUNK / 2] = b[i] >> 4;
        }
        if let Some(t) = q.lut {
            out.iter_mut().for_each(|u| *u = t[*u as usize]);
        }
    }
    out
}

/// Quantized weight × float activations (padded `[n, ld]`):
/// `y = Σ_g Σ_j (u·s_g − z_g·s_g) · x_j`.
pub(crate) fn qf_rows(
    q: &QuantRepr,
    x: &[f32], // [n, ld], ld = n_groups * gp
    ld: usize,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    let cpg = q.gp / CHUNK;
    for t in 0..n {
        let xt = &x[t * ld..(t + 1) * ld];
        for r in r0..r1 {
            let mut acc = 0f32;
            for g in 0..q.n_groups {
                let (s, zs) = (q.scales[r * q.n_groups + g], q.zs[r * q.n_groups + g]);
                for c in 0..cpg {
                    let ch = g * cpg + c;
                    let codes = chunk_codes(q, r, ch);
                    let xc = &xt[ch * CHUNK..(ch + 1) * CHUNK];
                    for (u, xv) in codes.iter().zip(xc) {
                        acc += (*u as f32 * s - zs) * xv;
                    }
                }
            }
            y[t * ldy + r - r0] = acc;
        }
    }
}

/// Quantized weight × int8 activations:
/// `y = Σ_g (s_g·a_g) · Σ_j u_j·xq_j − (z_g·s_g) · (a_g · Σ_j xq_j)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn q8_rows(
    q: &QuantRepr,
    xq: &[i8], // [n, ld]
    ld: usize,
    a: &[f32], // [n, ng]
    b: &[f32], // [n, ng]
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    let (ng, cpg) = (q.n_groups, q.gp / CHUNK);
    for t in 0..n {
        let xt = &xq[t * ld..(t + 1) * ld];
        for r in r0..r1 {
            let mut acc = 0f32;
            for g in 0..ng {
                let mut isum = 0i32;
                for c in 0..cpg {
                    let ch = g * cpg + c;
                    let codes = chunk_codes(q, r, ch);
                    for (e, u) in codes.iter().enumerate() {
                        isum += *u as i32 * xt[q.q8_pos(ch, e)] as i32;
                    }
                }
                let i = r * ng + g;
                acc += q.scales[i] * a[t * ng + g] * isum as f32 - q.zs[i] * b[t * ng + g];
            }
            y[t * ldy + r - r0] = acc;
        }
    }
}
