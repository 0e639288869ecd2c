//! Small vector kernels of the runtime (attention scores/values, residual adds),
//! with an AVX2+FMA path and a scalar path chosen by the [`crate::SimdLevel`] of [`Ops`].

use crate::ops::Ops;

/// One attention head over positions `0..n` (`n ≥ 1`):
/// `out[hs] = softmax(q · K) · V` with `K`, `V` stored transposed (`kt`, `vt`:
/// `[hs, ld]`, positions contiguous; `ld` a multiple of 8 and `≥ n`). `q` is
/// pre-scaled by `1/sqrt(hs)`; `e` (`≥ n` rounded up to 8) receives the weights.
pub(crate) fn attend(
    ops: &Ops,
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    ld: usize,
    n: usize,
    e: &mut [f32],
    out: &mut [f32],
) {
    let hs = q.len();
    assert!(
        n >= 1 && ld.is_multiple_of(8) && n <= ld && kt.len() >= hs * ld && vt.len() >= hs * ld
    );
    assert!(e.len() >= n.div_ceil(8) * 8 && out.len() == hs);
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::has_avx2(ops.level()) {
        // SAFETY: the level was resolved against the CPU (AVX2 + FMA + F16C
        // present); every length the kernel reads was asserted above.
        unsafe { avx2::attend(q, kt, vt, ld, n, e, out) };
        return;
    }
    let s = &mut e[..n];
    s.fill(0.0);
    for (d, &qd) in q.iter().enumerate() {
        for (sv, kv) in s.iter_mut().zip(&kt[d * ld..d * ld + n]) {
            *sv += qd * kv;
        }
    }
    ops.softmax(s);
    for (d, o) in out.iter_mut().enumerate() {
        *o = s
            .iter()
            .zip(&vt[d * ld..d * ld + n])
            .map(|(a, b)| a * b)
            .sum();
    }
}

/// Two query heads sharing one K/V head (GQA): like [`attend`] for `q0`/`q1`
/// (`out0`/`out1`), but every K and V row is loaded once for both. `e` holds
/// `2 · ld` weights.
pub(crate) fn attend_pair(
    ops: &Ops,
    q: [&[f32]; 2],
    kt: &[f32],
    vt: &[f32],
    ld: usize,
    n: usize,
    e: &mut [f32],
    out: [&mut [f32]; 2],
) {
    let hs = q[0].len();
    assert!(
        n >= 1 && ld.is_multiple_of(8) && n <= ld && kt.len() >= hs * ld && vt.len() >= hs * ld
    );
    assert!(q[1].len() == hs && out[0].len() == hs && out[1].len() == hs && e.len() >= 2 * ld);
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::has_avx2(ops.level()) {
        // SAFETY: as in `attend`; lengths asserted above.
        unsafe { avx2::attend_pair(q, kt, vt, ld, n, e, out) };
        return;
    }
    let [o0, o1] = out;
    let (e0, e1) = e.split_at_mut(ld);
    attend(ops, q[0], kt, vt, ld, n, e0, o0);
    attend(ops, q[1], kt, vt, ld, n, e1, o1);
}

/// `y += x` element-wise.
pub(crate) fn add(y: &mut [f32], x: &[f32]) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += b;
    }
}

/// `y += a · x` element-wise.
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (v, b) in y.iter_mut().zip(x) {
        *v += a * b;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::avx2::{hsum, hsum8};
    use crate::ops_avx2::exp256;
    use std::arch::x86_64::*;

    /// See [`super::attend`]; lengths are checked by the caller.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn attend(
        q: &[f32],
        kt: &[f32],
        vt: &[f32],
        ld: usize,
        n: usize,
        e: &mut [f32],
        out: &mut [f32],
    ) {
        let hs = q.len();
        let nb = n.div_ceil(8);
        let last = (nb - 1) * 8;
        let (kp, vp, ep) = (kt.as_ptr(), vt.as_ptr(), e.as_mut_ptr());
        // Lanes of the last block that hold real positions.
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_set1_epi32((n - last) as i32),
            lane,
        ));
        // SAFETY (all pointer ops below): blocks start at 8·b < ld and end at
        // 8·nb <= ld (ld is a multiple of 8 and >= n), so row `d` reads stay inside
        // `[d·ld, (d+1)·ld)` ⊂ kt / vt (len >= hs·ld), and `e` has >= 8·nb elements.
        unsafe {
            // Pass 1: scores, 4 blocks of 8 positions in flight.
            let mut b = 0;
            while b + 4 <= nb {
                let mut a = [_mm256_setzero_ps(); 4];
                for (d, &qd) in q.iter().enumerate() {
                    let qv = _mm256_set1_ps(qd);
                    let row = kp.add(d * ld + b * 8);
                    for (u, acc) in a.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(row.add(8 * u)), *acc);
                    }
                }
                for (u, acc) in a.iter().enumerate() {
                    _mm256_storeu_ps(ep.add((b + u) * 8), *acc);
                }
                b += 4;
            }
            while b < nb {
                let mut acc = _mm256_setzero_ps();
                for (d, &qd) in q.iter().enumerate() {
                    acc = _mm256_fmadd_ps(
                        _mm256_set1_ps(qd),
                        _mm256_loadu_ps(kp.add(d * ld + b * 8)),
                        acc,
                    );
                }
                _mm256_storeu_ps(ep.add(b * 8), acc);
                b += 1;
            }
            // Pass 2: mask, max, exp and sum (masked lanes exactly 0).
            let inv = softmax_blocks(ep, nb, mask);
            // Pass 3: weighted sum of V rows, 8 head dimensions at a time.
            let mut d0 = 0;
            while d0 + 8 <= hs {
                let mut a = [_mm256_setzero_ps(); 8];
                for b in 0..nb {
                    let ev = _mm256_loadu_ps(ep.add(b * 8));
                    for (j, acc) in a.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(
                            ev,
                            _mm256_loadu_ps(vp.add((d0 + j) * ld + b * 8)),
                            *acc,
                        );
                    }
                }
                let r = _mm256_mul_ps(hsum8(&a), _mm256_set1_ps(inv));
                _mm256_storeu_ps(out.as_mut_ptr().add(d0), r);
                d0 += 8;
            }
            for d in d0..hs {
                let mut acc = _mm256_setzero_ps();
                for b in 0..nb {
                    acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(ep.add(b * 8)),
                        _mm256_loadu_ps(vp.add(d * ld + b * 8)),
                        acc,
                    );
                }
                out[d] = hsum(acc) * inv;
            }
        }
    }

    /// Masks the last block to −∞, returns the max and turns scores into
    /// `exp(s − max)` (masked lanes exactly 0); returns `1 / Σ`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn softmax_blocks(ep: *mut f32, nb: usize, mask: __m256) -> f32 {
        let last = (nb - 1) * 8;
        let mut lanes = [0f32; 8];
        // SAFETY: the caller guarantees 8·nb writable floats at `ep`.
        unsafe {
            let tail = _mm256_loadu_ps(ep.add(last));
            _mm256_storeu_ps(
                ep.add(last),
                _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), tail, mask),
            );
            let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
            for b in 0..nb {
                vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(ep.add(b * 8)));
            }
            _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
            let m = _mm256_set1_ps(lanes.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)));
            let mut vs = _mm256_setzero_ps();
            for b in 0..nb {
                let mut x = exp256(_mm256_sub_ps(_mm256_loadu_ps(ep.add(b * 8)), m));
                if b + 1 == nb {
                    x = _mm256_and_ps(x, mask);
                }
                _mm256_storeu_ps(ep.add(b * 8), x);
                vs = _mm256_add_ps(vs, x);
            }
            _mm256_storeu_ps(lanes.as_mut_ptr(), vs);
        }
        1.0 / lanes.iter().sum::<f32>()
    }

    /// See [`super::attend_pair`]; lengths are checked by the caller.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn attend_pair(
        q: [&[f32]; 2],
        kt: &[f32],
        vt: &[f32],
        ld: usize,
        n: usize,
        e: &mut [f32],
        out: [&mut [f32]; 2],
    ) {
        let hs = q[0].len();
        let nb = n.div_ceil(8);
        let last = (nb - 1) * 8;
        let (kp, vp) = (kt.as_ptr(), vt.as_ptr());
        let e0 = e.as_mut_ptr();
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mask = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_set1_epi32((n - last) as i32),
            lane,
        ));
        // SAFETY: as in `attend`: every block lies inside its row of kt / vt
        // (8·nb <= ld), and e has 2·ld >= ld + 8·nb floats (head 1 at e0 + ld).
        unsafe {
            let e1 = e0.add(ld);
            // Pass 1: scores of both heads, 4 blocks in flight (8 independent FMA
            // chains hide the FMA latency), K loaded once for both heads.
            let (q0p, q1p) = (q[0].as_ptr(), q[1].as_ptr());
            let mut b = 0;
            while b + 4 <= nb {
                let mut a0 = [_mm256_setzero_ps(); 4];
                let mut a1 = [_mm256_setzero_ps(); 4];
                for d in 0..hs {
                    let (q0, q1) = (_mm256_set1_ps(*q0p.add(d)), _mm256_set1_ps(*q1p.add(d)));
                    let row = kp.add(d * ld + b * 8);
                    for u in 0..4 {
                        let k = _mm256_loadu_ps(row.add(8 * u));
                        a0[u] = _mm256_fmadd_ps(q0, k, a0[u]);
                        a1[u] = _mm256_fmadd_ps(q1, k, a1[u]);
                    }
                }
                for u in 0..4 {
                    _mm256_storeu_ps(e0.add((b + u) * 8), a0[u]);
                    _mm256_storeu_ps(e1.add((b + u) * 8), a1[u]);
                }
                b += 4;
            }
            while b < nb {
                let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for d in 0..hs {
                    let k = _mm256_loadu_ps(kp.add(d * ld + b * 8));
                    a0 = _mm256_fmadd_ps(_mm256_set1_ps(*q0p.add(d)), k, a0);
                    a1 = _mm256_fmadd_ps(_mm256_set1_ps(*q1p.add(d)), k, a1);
                }
                _mm256_storeu_ps(e0.add(b * 8), a0);
                _mm256_storeu_ps(e1.add(b * 8), a1);
                b += 1;
            }
            let inv0 = softmax_blocks(e0, nb, mask);
            let inv1 = softmax_blocks(e1, nb, mask);
            let invv = _mm256_setr_ps(inv0, inv0, inv0, inv0, inv1, inv1, inv1, inv1);
            let [o0, o1] = out;
            // Pass 3: 4 head dimensions × 2 heads per sweep, V loaded once.
            let mut d0 = 0;
            while d0 + 4 <= hs {
                let mut a = [_mm256_setzero_ps(); 8];
                for b in 0..nb {
                    let (x0, x1) = (
                        _mm256_loadu_ps(e0.add(b * 8)),
                        _mm256_loadu_ps(e1.add(b * 8)),
                    );
                    for j in 0..4 {
                        let v = _mm256_loadu_ps(vp.add((d0 + j) * ld + b * 8));
                        a[j] = _mm256_fmadd_ps(x0, v, a[j]);
                        a[4 + j] = _mm256_fmadd_ps(x1, v, a[4 + j]);
                    }
                }
                let mut r = [0f32; 8];
                _mm256_storeu_ps(r.as_mut_ptr(), _mm256_mul_ps(hsum8(&a), invv));
                o0[d0..d0 + 4].copy_from_slice(&r[..4]);
                o1[d0..d0 + 4].copy_from_slice(&r[4..]);
                d0 += 4;
            }
            for d in d0..hs {
                let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for b in 0..nb {
                    let v = _mm256_loadu_ps(vp.add(d * ld + b * 8));
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(e0.add(b * 8)), v, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(e1.add(b * 8)), v, a1);
                }
                o0[d] = hsum(a0) * inv0;
                o1[d] = hsum(a1) * inv1;
            }
        }
    }
}
