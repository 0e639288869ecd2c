//! INT4 × int8-activation GEMV/GEMM on the row-interleaved layout
//! ([`crate::interleave`]): per 32-byte load, 8 rows × 8 elements; activations
//! are broadcast 4 at a time, `vpmaddubsw` + `vpmaddwd` give exact i32 sums per
//! row lane, each group is scaled once per 8 rows (`s·a`), and the zero point is
//! removed with `z·s · b` (one FMA per group per 8 rows). No horizontal sums.
//!
//! [`q4il_rows_vnni`] is the same kernel with AVX-512 VNNI: one 256-bit `vpdpbusd` per nibble
//! half instead of `vpmaddubsw` + i16 add (+ `vpmaddwd` per chunk), and 8 tokens per weight load
//! in prefill (AVX-512VL's 32 vector registers hold the 8 accumulators). The integer sums are
//! exact either way, so both kernels give the same bits.
//!
//! Codebook weights (`QuantRepr::lut`, `crate::codebook`) use the same layout and loops: each
//! nibble is decoded in registers through the 16-byte table (`vpshufb`) to its 8-bit code `u`.
//! `vpdpbusd` takes `u` directly; `vpmaddubsw` would saturate on `u · x` pair sums, so without
//! VNNI `u = 16·h + l` is decoded into its two nibbles (two tables) and summed as two INT4
//! halves, `Σ l·x + 16·Σ h·x`. Either way the sums are exact, so every path gives the same bits.
//!
//! The GEMV and the token-tiled GEMM repeat the unpack sequence on purpose: each is one register
//! tile the compiler keeps in ymm registers.

use super::q4il_ops::{ISum, Tables, decode};
use crate::interleave::IL_ROWS;
use crate::pack::{CHUNK, QuantRepr};
use std::arch::x86_64::*;

/// Offsets (inside a 2-chunk block of the staged INT4 activation row) of the
/// activations paired with the low / high nibbles of sub-step `s`, for a chunk
/// at block half `half` (see `QuantRepr::q8_pos`): element `e` of the chunk sits
/// at `(e / 16)·32 + half·16 + e % 16`.
#[inline]
fn act_off(half: usize, e: usize) -> usize {
    (e / 16) * CHUNK + half * 16 + e % 16
}

/// Offset of chunk `ch`'s activations in a staged INT4 row (element 0 of the
/// chunk; see [`act_off`]).
#[inline]
fn chunk_off(ch: usize) -> usize {
    (ch / 2) * 2 * CHUNK + act_off(ch % 2, 0)
}

/// Rows `r0..r1` of `y [n, ldy]` (column `r − r0`) for `n` staged tokens.
///
/// # Safety
/// AVX2 + FMA + F16C must be available. All other preconditions are asserted.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn q4il_rows(
    q: &QuantRepr,
    out: usize,
    xq: &[i8], // [n, ld] (INT4 staging order)
    ld: usize,
    a: &[f32], // [n, ng]
    b: &[f32], // [n, ng]
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    // SAFETY: AVX2 + FMA + F16C (this function's contract).
    unsafe {
        match q.lut {
            None => rows::<false, 4, false, false>(q, out, xq, ld, a, b, n, r0, r1, y, ldy),
            Some(_) => rows::<false, 4, true, false>(q, out, xq, ld, a, b, n, r0, r1, y, ldy),
        }
    }
}

/// [`q4il_rows`] with `vpdpbusd` and 8-token tiles (same results).
///
/// # Safety
/// AVX2 + FMA + F16C + AVX-512 F/VL/VNNI must be available. All other preconditions are
/// asserted.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn q4il_rows_vnni(
    q: &QuantRepr,
    out: usize,
    xq: &[i8], // [n, ld] (INT4 staging order)
    ld: usize,
    a: &[f32], // [n, ng]
    b: &[f32], // [n, ng]
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    // SAFETY: every feature the VNNI body needs (this function's contract).
    unsafe {
        match q.lut {
            None => rows::<true, 8, false, false>(q, out, xq, ld, a, b, n, r0, r1, y, ldy),
            Some(_) => rows::<true, 8, true, false>(q, out, xq, ld, a, b, n, r0, r1, y, ldy),
        }
    }
}

/// [`q4il_rows_vnni`] for codebook weights (`q.lut`) on CPUs with AVX-512 VBMI: the nibbles are
/// decoded with `vpermb` (see `q4il_ops::decode`). Same integer sums, so the same bits.
///
/// # Safety
/// AVX2 + FMA + F16C + AVX-512 F/BW/VL/VNNI/VBMI must be available. All other preconditions
/// are asserted.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn q4il_rows_vbmi(
    q: &QuantRepr,
    out: usize,
    xq: &[i8], // [n, ld] (INT4 staging order)
    ld: usize,
    a: &[f32], // [n, ng]
    b: &[f32], // [n, ng]
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    // SAFETY: every feature the VBMI body needs (this function's contract); `rows` asserts that
    // `q` is a codebook weight (`L = true`).
    unsafe { rows::<true, 8, true, true>(q, out, xq, ld, a, b, n, r0, r1, y, ldy) }
}

/// The body of [`q4il_rows`] (`V = false`, `TT = 4`), [`q4il_rows_vnni`] (`V = true`,
/// `TT = 8`) and [`q4il_rows_vbmi`] (`P = true`), inlined into their feature sets; `L` when the
/// nibbles go through `q.lut`, `P` when they are decoded with `vpermb`.
///
/// # Safety
/// The caller's features (see the wrappers).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn rows<const V: bool, const TT: usize, const L: bool, const P: bool>(
    q: &QuantRepr,
    out: usize,
    xq: &[i8], // [n, ld] (INT4 staging order)
    ld: usize,
    a: &[f32], // [n, ng]
    b: &[f32], // [n, ng]
    n: usize,
    r0: usize,
    r1: usize,
    y: &mut [f32], // [n, ldy]
    ldy: usize,
) {
    let il = &q.il;
    let (ng, cpg) = (q.n_groups, q.gp / CHUNK);
    let blocks = out.div_ceil(IL_ROWS);
    assert!(q.bits == 4 && il.chunks == ng * cpg && r0 <= r1 && r1 <= out);
    assert_eq!(L, q.lut.is_some());
    assert!(il.codes.len() == blocks * il.block_bytes && il.block_bytes == il.chunks * 128);
    assert!(il.scales.len() == blocks * ng * IL_ROWS && il.zs.len() == il.scales.len());
    assert!(il.chunks.div_ceil(2) * 2 * CHUNK <= ld && n * ld <= xq.len());
    assert!(n * ng <= a.len() && n * ng <= b.len());
    assert!(n == 0 || (n - 1) * ldy + (r1 - r0) <= y.len());
    if n == 1 {
        // SAFETY: bounds asserted above.
        unsafe { gemv::<V, L, P>(q, xq, a, b, r0, r1, y) };
        return;
    }
    for blk in r0 / IL_ROWS..r1.div_ceil(IL_ROWS) {
        let rb = blk * IL_ROWS;
        let (lo, hi) = (rb.max(r0), (rb + IL_ROWS).min(r1));
        let mut t = 0;
        while t + TT <= n {
            // SAFETY: blk < blocks, t + TT <= n; sizes asserted above.
            let acc = unsafe { tile::<V, TT, L, P>(q, blk, xq, ld, a, b, t) };
            for (j, v) in acc.iter().enumerate() {
                // SAFETY: the caller's features include AVX2 + FMA + F16C.
                unsafe { store(y, (t + j) * ldy, rb, lo, hi, r0, *v) };
            }
            t += TT;
        }
        while t + 4 <= n {
            // SAFETY: blk < blocks, t + 4 <= n; sizes asserted above.
            let acc = unsafe { tile::<V, 4, L, P>(q, blk, xq, ld, a, b, t) };
            for (j, v) in acc.iter().enumerate() {
                // SAFETY: as above.
                unsafe { store(y, (t + j) * ldy, rb, lo, hi, r0, *v) };
            }
            t += 4;
        }
        while t < n {
            // SAFETY: blk < blocks, t < n; sizes asserted above.
            let acc = unsafe { tile::<V, 1, L, P>(q, blk, xq, ld, a, b, t) };
            // SAFETY: as above.
            unsafe { store(y, t * ldy, rb, lo, hi, r0, acc[0]) };
            t += 1;
        }
    }
}

/// One chunk (32 elements × 8 rows) against one token: the 4 sub-steps' exact sums as i32
/// lanes (one per row; see [`tile`]).
///
/// # Safety
/// 128 code bytes at `wp` and activations `x + SUB_OFF[s] .. + 8` readable; AVX2 (+ VNNI
/// when `V`).
#[inline(always)]
unsafe fn chunk1<const V: bool, const L: bool, const P: bool>(
    wp: *const u8,
    x: *const i8,
    m: __m256i,
    t: &Tables,
) -> __m256i {
    // SAFETY: caller guarantees the reads and features.
    unsafe {
        let mut sum = ISum::zero();
        for (s, off) in SUB_OFF.into_iter().enumerate() {
            let w = decode::<V, L, P>(_mm256_loadu_si256(wp.add(s * 32) as *const __m256i), m, t);
            let xl = _mm256_set1_epi32((x.add(off) as *const i32).read_unaligned());
            let xh = _mm256_set1_epi32((x.add(off + 4) as *const i32).read_unaligned());
            sum.madd2::<V, L>(&w, xl, xh);
        }
        sum.widen::<V, L>();
        sum.i32
    }
}

/// Decode GEMV (one token): rows `r0..r1` into `y[r − r0]`, every pointer
/// computed once per 8-row block and the accumulator kept in a register.
///
/// # Safety
/// AVX2 + FMA + F16C (+ VNNI when `V`); the bounds asserted by [`q4il_rows`] for `n = 1`.
#[inline(always)]
unsafe fn gemv<const V: bool, const L: bool, const P: bool>(
    q: &QuantRepr,
    xq: &[i8],
    a: &[f32],
    b: &[f32],
    r0: usize,
    r1: usize,
    y: &mut [f32],
) {
    let il = &q.il;
    let (ng, cpg) = (q.n_groups, q.gp / CHUNK);
    // SAFETY: AVX2 is implied by the caller's features.
    let (m, tabs) = unsafe { (_mm256_set1_epi8(0x0F), Tables::new(q.lut)) };
    let (x, ap, bp) = (xq.as_ptr(), a.as_ptr(), b.as_ptr());
    // SAFETY (whole body): blocks lie inside `il.codes` / `il.scales` / `il.zs`
    // (asserted sizes), chunk activations inside `xq[..ld]`, groups inside `a` /
    // `b` (outputs go through the bounds-checked `store`).
    unsafe {
        for blk in r0 / IL_ROWS..r1.div_ceil(IL_ROWS) {
            let mut wp = il.codes.as_ptr().add(blk * il.block_bytes);
            let sp = il.scales.as_ptr().add(blk * ng * IL_ROWS);
            let zp = il.zs.as_ptr().add(blk * ng * IL_ROWS);
            let mut group = |g: usize| {
                let mut isum = _mm256_setzero_si256();
                for c in 0..cpg {
                    isum = _mm256_add_epi32(
                        isum,
                        chunk1::<V, L, P>(wp, x.add(chunk_off(g * cpg + c)), m, &tabs),
                    );
                    wp = wp.add(4 * 32);
                }
                let sa = _mm256_mul_ps(
                    _mm256_loadu_ps(sp.add(g * IL_ROWS)),
                    _mm256_set1_ps(*ap.add(g)),
                );
                (_mm256_cvtepi32_ps(isum), sa)
            };
            // Same operation order per group as `tile` (so a token's outputs do
            // not depend on how tokens were tiled or split across threads).
            let mut acc = _mm256_setzero_ps();
            for g in 0..ng {
                let (v, sa) = group(g);
                acc = _mm256_fmadd_ps(v, sa, acc);
                acc = _mm256_fnmadd_ps(
                    _mm256_loadu_ps(zp.add(g * IL_ROWS)),
                    _mm256_set1_ps(*bp.add(g)),
                    acc,
                );
            }
            let rb = blk * IL_ROWS;
            store(y, 0, rb, rb.max(r0), (rb + IL_ROWS).min(r1), r0, acc);
        }
    }
}

/// Writes rows `lo..hi` (of block rows `rb..rb+8`) of one token's outputs at
/// `y[off + r − r0]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store(y: &mut [f32], off: usize, rb: usize, lo: usize, hi: usize, r0: usize, acc: __m256) {
    let dst = &mut y[off + lo - r0..off + hi - r0];
    if lo == rb && hi - lo == IL_ROWS {
        // SAFETY: `dst` holds exactly 8 floats.
        unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), acc) };
    } else {
        let mut v = [0f32; IL_ROWS];
        // SAFETY: `v` holds 8 floats.
        unsafe { _mm256_storeu_ps(v.as_mut_ptr(), acc) };
        dst.copy_from_slice(&v[lo - rb..hi - rb]);
    }
}

/// Offsets (from the start of a chunk's activations, see [`act_off`]) of the 4
/// activations paired with the low nibbles of sub-steps 0..4; the high nibbles'
/// are 4 further on.
const SUB_OFF: [usize; 4] = [0, 8, CHUNK, CHUNK + 8];

/// 8 rows (block `blk`) × `T` tokens `t..t+T`: each 32-byte weight load and its
/// nibble split are shared by the `T` tokens.
///
/// A chunk's 4 sub-steps are summed in i16 (|u4 · i8| pair sums ≤ 2·15·127, eight
/// of them ≤ 30,480 < 2¹⁵) and widened with one `vpmaddwd` per chunk; the
/// integer sums are exact, so the result does not depend on this order.
///
/// # Safety
/// AVX2 + FMA + F16C (+ VNNI when `V`); the bounds asserted by [`q4il_rows`], with `blk` one
/// of its blocks and `t + T <= n` (the reads below are unchecked).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const V: bool, const T: usize, const L: bool, const P: bool>(
    q: &QuantRepr,
    blk: usize,
    xq: &[i8],
    ld: usize,
    a: &[f32],
    b: &[f32],
    t: usize,
) -> [__m256; T] {
    let il = &q.il;
    let (ng, cpg) = (q.n_groups, q.gp / CHUNK);
    debug_assert_eq!(SUB_OFF[3] + 4, act_off(0, 28));
    // SAFETY: the caller asserted `il.codes` holds `blocks · block_bytes` bytes
    // (block_bytes = ng·cpg·128), `il.scales` / `il.zs` `blocks · ng · 8` floats,
    // every token row `t + j` of `xq` holds `ld >= ⌈chunks/2⌉·64` bytes and `a` /
    // `b` hold `ng` floats per token: every pointer below stays inside those.
    unsafe {
        let mut wp = il.codes.as_ptr().add(blk * il.block_bytes);
        let sp = il.scales.as_ptr().add(blk * ng * IL_ROWS);
        let zp = il.zs.as_ptr().add(blk * ng * IL_ROWS);
        let xp: [*const i8; T] = std::array::from_fn(|j| xq.as_ptr().add((t + j) * ld));
        let ap = a.as_ptr().add(t * ng);
        let bp = b.as_ptr().add(t * ng);
        let m = _mm256_set1_epi8(0x0F);
        let tabs = Tables::new(q.lut);
        let mut acc = [_mm256_setzero_ps(); T];
        let mut ch = 0;
        for g in 0..ng {
            let mut isum = [ISum::zero(); T];
            for _ in 0..cpg {
                let xo = chunk_off(ch);
                for (s, off) in SUB_OFF.into_iter().enumerate() {
                    let w = _mm256_loadu_si256(wp.add(s * 32) as *const __m256i);
                    let w = decode::<V, L, P>(w, m, &tabs);
                    for j in 0..T {
                        let x = xp[j].add(xo + off);
                        let xl = _mm256_set1_epi32((x as *const i32).read_unaligned());
                        let xh = _mm256_set1_epi32((x.add(4) as *const i32).read_unaligned());
                        isum[j].madd2::<V, L>(&w, xl, xh);
                    }
                }
                for sum in isum.iter_mut() {
                    sum.widen::<V, L>();
                }
                wp = wp.add(4 * 32);
                ch += 1;
            }
            let s = _mm256_loadu_ps(sp.add(g * IL_ROWS));
            let z = _mm256_loadu_ps(zp.add(g * IL_ROWS));
            for j in 0..T {
                let sa = _mm256_mul_ps(s, _mm256_set1_ps(*ap.add(j * ng + g)));
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[j].i32), sa, acc[j]);
                acc[j] = _mm256_fnmadd_ps(z, _mm256_set1_ps(*bp.add(j * ng + g)), acc[j]);
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codebook::CodebookParts;
    use crate::dispatch::{self, SimdLevel};
    use crate::pack::PackedWeight;
    use crate::scratch::{Scratch, Staged};
    use half::f16;
    use squish_core::codebook::CbTensor;
    use squish_core::data::Rng;

    /// On a CPU with VBMI the runtime takes the `vpermb` decode for codebook weights, so the
    /// `vpshufb` one of the same VNNI kernel is compared with it here: the same bits for 2/3/4-bit
    /// codes on widths 1, 17, 64, 172 (short last groups) and 1–17 tokens (GEMV and every tile).
    #[test]
    fn vbmi_decode_equals_the_pshufb_decode() {
        if dispatch::detect() != SimdLevel::Avx512Vnni || !dispatch::has_vbmi() {
            return;
        }
        let mut rng = Rng::new(8);
        for bits in 2..=4u32 {
            for &inp in &[1usize, 17, 64, 172] {
                for &group in &[inp, 16.min(inp), 64.min(inp)] {
                    let rows = 13;
                    let mut levels: Vec<f32> =
                        (0..1 << bits).map(|_| rng.f32() * 2.0 - 1.0).collect();
                    levels.sort_by(f32::total_cmp);
                    let codes: Vec<u8> = (0..rows * inp)
                        .map(|_| rng.below(1 << bits) as u8)
                        .collect();
                    let scales = (0..rows * inp.div_ceil(group))
                        .map(|_| f16::from_f32(0.01 + rng.f32()))
                        .collect();
                    let c = CbTensor::from_codes(bits, rows, inp, group, &codes, scales, levels)
                        .unwrap();
                    let w = PackedWeight::from_codebook(CodebookParts {
                        bits,
                        out: rows,
                        inp,
                        group,
                        codes: &c.codes,
                        scales: &c.scales,
                        levels: &c.levels,
                    })
                    .unwrap();
                    let q = w.q8_repr().unwrap();
                    for n in [1usize, 3, 4, 8, 9, 17] {
                        let x: Vec<f32> = (0..n * inp).map(|_| rng.f32() * 2.0 - 1.0).collect();
                        let mut s = Scratch::new();
                        let Staged::Q8 { xq, ld, a, b, .. } = s.stage_q8(&w, &x, n, None, true)
                        else {
                            unreachable!("int8 staging")
                        };
                        let mut y = [vec![0f32; n * rows], vec![0f32; n * rows]];
                        // SAFETY: AVX-512 VNNI and VBMI (with AVX2/FMA/F16C/F/BW/VL) detected above.
                        unsafe {
                            q4il_rows_vnni(q, rows, xq, ld, a, b, n, 0, rows, &mut y[0], rows);
                            q4il_rows_vbmi(q, rows, xq, ld, a, b, n, 0, rows, &mut y[1], rows);
                        }
                        assert!(y[0] == y[1], "cb{bits} in={inp} g={group} n={n}");
                    }
                }
            }
        }
    }
}
