//! aarch64 NEON kernels: dense f32 and quantized × float activations.
//!
//! Compile-checked only (`cargo check --target aarch64-unknown-linux-gnu`); no
//! aarch64 machine was available to run them. F16 weights and int8 activations
//! use the scalar code on aarch64.
//!
//! Mirrors `scalar.rs`'s signatures and loops on purpose (same contract, NEON intrinsics inside).

use crate::pack::{CHUNK, QuantRepr};
use std::arch::aarch64::*;

/// Dense f32 rows `r0..r1` (see [`crate::scalar::f32_rows`]), 4 rows × 4 lanes.
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
    let full = inp / 4 * 4;
    for t in 0..n {
        let xt = &x[t * ld..t * ld + inp];
        for r in r0..r1 {
            let row = &w[r * inp..(r + 1) * inp];
            let mut c = 0;
            // SAFETY: NEON is part of the aarch64 baseline; loads read row[c..c+4]
            // and xt[c..c+4] with c + 4 <= full <= inp = row.len() = xt.len().
            let mut s = unsafe {
                let mut acc = vdupq_n_f32(0.0);
                while c < full {
                    acc = vfmaq_f32(
                        acc,
                        vld1q_f32(row.as_ptr().add(c)),
                        vld1q_f32(xt.as_ptr().add(c)),
                    );
                    c += 4;
                }
                vaddvq_f32(acc)
            };
            for cc in full..inp {
                s += row[cc] * xt[cc];
            }
            y[t * ldy + r - r0] = s;
        }
    }
}

/// Quantized rows × float activations (see [`crate::scalar::qf_rows`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn qf_rows(
    q: &QuantRepr,
    x: &[f32], // [n, ld]
    ld: usize,
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    let (ng, cpg) = (q.n_groups, q.gp / CHUNK);
    assert!(ng * q.gp <= ld && n * ld <= x.len() && r1 * q.row_bytes <= q.codes.len());
    for t in 0..n {
        for r in r0..r1 {
            // SAFETY: NEON is baseline on aarch64; every load reads 4 floats at
            // t*ld + ch*CHUNK + 4k < t*ld + ng*gp <= (t+1)*ld <= x.len() (asserted),
            // and 16 bytes from the local `codes` array.
            let acc = unsafe {
                let mut acc = vdupq_n_f32(0.0);
                for g in 0..ng {
                    let s = vdupq_n_f32(q.scales[r * ng + g]);
                    let zs = vdupq_n_f32(q.zs[r * ng + g]);
                    for ch in g * cpg..(g + 1) * cpg {
                        let codes = crate::scalar::chunk_codes(q, r, ch);
                        for half in 0..2 {
                            let b = vld1q_u8(codes.as_ptr().add(16 * half));
                            let lo = vmovl_u8(vget_low_u8(b));
                            let hi = vmovl_u8(vget_high_u8(b));
                            let parts = [
                                vmovl_u16(vget_low_u16(lo)),
                                vmovl_u16(vget_high_u16(lo)),
                                vmovl_u16(vget_low_u16(hi)),
                                vmovl_u16(vget_high_u16(hi)),
                            ];
                            for (k, p) in parts.into_iter().enumerate() {
                                let wv = vsubq_f32(vmulq_f32(vcvtq_f32_u32(p), s), zs);
                                let xo = t * ld + ch * CHUNK + 16 * half + 4 * k;
                                acc = vfmaq_f32(acc, wv, vld1q_f32(x.as_ptr().add(xo)));
                            }
                        }
                    }
                }
                vaddvq_f32(acc)
            };
            y[t * ldy + r - r0] = acc;
        }
    }
}
