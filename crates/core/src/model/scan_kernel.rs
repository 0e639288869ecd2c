//! The fused selective scan on contiguous f32 buffers: forward and hand-written backward, no burn.
//!
//! Recurrence (shapes as in [`super::ssm_scan`]), for every batch row `b` and channel `i`:
//! `h_t = exp(Δ_t·A) ⊙ h_{t−1} + (Δ_t·x_t) B_t` (`h [N]`), `y_t = h_t·C_t + D·x_t`.
//!
//! Layout: channels are processed in blocks of [`W`] lanes (64-byte aligned `[f32; W]` arrays,
//! zero-padded past `d_inner`; padded lanes contribute exact zeros), so every inner loop is an elementwise loop over `W` lanes that the compiler
//! vectorizes; `exp` is a branch-free polynomial ([`exp_lanes`]) so it vectorizes too. The same
//! code is compiled three times — baseline, AVX2 and AVX-512 — and picked at run time; it uses
//! only IEEE add/mul/sub/compare/bit operations (no fused multiply-add, which Rust never forms
//! implicitly), so every path gives the same bits.
//!
//! Backward: per (batch row, channel block) the forward is recomputed into two `[seq, N, W]`
//! buffers (`h_t` and `exp(Δ_t A)` for every `t`; nothing but the inputs is kept between forward
//! and backward), then time runs in reverse with `g_t = ∂L/∂h_t`:
//! `g_t = dy_t C_t + exp(Δ_{t+1}A) ⊙ g_{t+1}`;
//! `∂C_t += Σ_i dy_t h_t`, `∂B_t += Σ_i g_t Δ_t x_t`, `∂(Δx)_t = g_t·B_t`;
//! with `q = g_t ⊙ h_{t−1} ⊙ exp(Δ_t A)`: `∂Δ_t += q·A`, `∂A += q Δ_t`; `∂D += dy_t x_t`,
//! `∂x_t += dy_t D`. The sums over channels (`∂B`, `∂C`) are taken per lane over the blocks, then
//! over the lanes in a fixed pairwise order.
//!
//! Threads: batch rows are split into contiguous ranges, one per thread. Everything a batch row
//! produces is computed by one thread in a fixed order; the sums over the batch (`∂A`, `∂D`) go
//! through per-row partials added in row order afterwards — so results are bit-identical for any
//! thread count.

/// Channels per block (one AVX-512 register of f32).
pub const W: usize = 16;

pub use super::scan_rows::exp_lanes;
use super::scan_rows::{Blocked, Chunk, backward_rows, forward_rows};
#[cfg(target_arch = "x86_64")]
use super::scan_rows::{
    backward_rows_avx2, backward_rows_avx512, forward_rows_avx2, forward_rows_avx512,
};

/// Shapes of a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanDims {
    /// Batch rows.
    pub batch: usize,
    /// Timesteps.
    pub seq: usize,
    /// Channels.
    pub d_inner: usize,
    /// State size `N`.
    pub n: usize,
}

/// Borrowed inputs of a scan, row-major.
#[derive(Debug, Clone, Copy)]
pub struct ScanBufs<'a> {
    /// `[batch, seq, d_inner]`.
    pub x: &'a [f32],
    /// `[batch, seq, d_inner]`.
    pub delta: &'a [f32],
    /// `[d_inner, n]`.
    pub a: &'a [f32],
    /// `[batch, seq, n]`.
    pub b: &'a [f32],
    /// `[batch, seq, n]`.
    pub c: &'a [f32],
    /// `[d_inner]`.
    pub d: &'a [f32],
}

/// Gradients of a scalar loss with respect to every scan input (shapes as in [`ScanBufs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanGrads {
    /// `[batch, seq, d_inner]`.
    pub x: Vec<f32>,
    /// `[batch, seq, d_inner]`.
    pub delta: Vec<f32>,
    /// `[d_inner, n]`.
    pub a: Vec<f32>,
    /// `[batch, seq, n]`.
    pub b: Vec<f32>,
    /// `[batch, seq, n]`.
    pub c: Vec<f32>,
    /// `[d_inner]`.
    pub d: Vec<f32>,
}

/// Instruction-set path of the kernels. All paths give bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanIsa {
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64).
    Baseline,
    /// AVX2 (x86-64).
    Avx2,
    /// AVX-512F (x86-64).
    Avx512,
}

impl ScanIsa {
    /// The widest path this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return ScanIsa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return ScanIsa::Avx2;
            }
        }
        ScanIsa::Baseline
    }

    /// Every path this CPU can run, baseline first.
    pub fn available() -> Vec<Self> {
        [ScanIsa::Baseline, ScanIsa::Avx2, ScanIsa::Avx512]
            .into_iter()
            .filter(|p| p.supported())
            .collect()
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            ScanIsa::Baseline => true,
            #[cfg(target_arch = "x86_64")]
            ScanIsa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            ScanIsa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Threads for a scan over `batch` rows: the calling thread's budget
/// ([`crate::threads::threads`]), at most one per row.
pub fn default_threads(batch: usize) -> usize {
    crate::threads::threads().min(batch).max(1)
}

fn check(dims: ScanDims, inp: &ScanBufs) {
    let (bt, n) = (dims.batch * dims.seq, dims.n);
    assert_eq!(inp.x.len(), bt * dims.d_inner, "x");
    assert_eq!(inp.delta.len(), bt * dims.d_inner, "delta");
    assert_eq!(inp.a.len(), dims.d_inner * n, "a");
    assert_eq!(inp.b.len(), bt * n, "b");
    assert_eq!(inp.c.len(), bt * n, "c");
    assert_eq!(inp.d.len(), dims.d_inner, "d");
    assert!(n > 0, "the state size must be positive");
}

/// Rows per thread: contiguous ranges of `ceil(batch / threads)` rows.
fn rows_per_thread(batch: usize, threads: usize) -> usize {
    batch.div_ceil(threads.clamp(1, batch.max(1))).max(1)
}

/// Forward scan: `y [batch, seq, d_inner]`, on `threads` threads with the `isa` path (clamped
/// to what the CPU supports).
pub fn scan_forward(dims: ScanDims, inp: &ScanBufs, threads: usize, isa: ScanIsa) -> Vec<f32> {
    check(dims, inp);
    let isa = clamp_isa(isa);
    let blocked = Blocked::new(dims, inp.a, inp.d);
    let td = dims.seq * dims.d_inner;
    let mut y = vec![0.0; dims.batch * td];
    if td == 0 {
        return y;
    }
    let per = rows_per_thread(dims.batch, threads);
    std::thread::scope(|sc| {
        let mut first = None;
        for (i, yc) in y.chunks_mut(per * td).enumerate() {
            let blocked = &blocked;
            let run = move || match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `clamp_isa` returned this path only if the CPU supports it.
                ScanIsa::Avx512 => unsafe { forward_rows_avx512(dims, blocked, inp, i * per, yc) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                ScanIsa::Avx2 => unsafe { forward_rows_avx2(dims, blocked, inp, i * per, yc) },
                _ => forward_rows(dims, blocked, inp, i * per, yc),
            };
            if i == 0 {
                first = Some(run);
            } else {
                sc.spawn(run);
            }
        }
        if let Some(mut run) = first {
            run(); // the calling thread takes the first range after spawning the others
        }
    });
    y
}

/// Backward scan: the gradients of a loss with respect to every input, given `dy = ∂L/∂y
/// [batch, seq, d_inner]`. Bit-identical for any `threads` and any `isa`.
pub fn scan_backward(
    dims: ScanDims,
    inp: &ScanBufs,
    dy: &[f32],
    threads: usize,
    isa: ScanIsa,
) -> ScanGrads {
    check(dims, inp);
    let isa = clamp_isa(isa);
    let blocked = Blocked::new(dims, inp.a, inp.d);
    let (bsz, di, n) = (dims.batch, dims.d_inner, dims.n);
    let (td, tn) = (dims.seq * di, dims.seq * n);
    assert_eq!(dy.len(), bsz * td, "dy");
    let mut gx = vec![0.0; bsz * td];
    let mut gdelta = vec![0.0; bsz * td];
    let mut gb = vec![0.0; bsz * tn];
    let mut gc = vec![0.0; bsz * tn];
    let mut ga_rows = vec![0.0; bsz * di * n]; // [batch, d_inner, n]
    let mut gd_rows = vec![0.0; bsz * di]; // [batch, d_inner]
    if dims.seq > 0 && di > 0 && bsz > 0 {
        let per = rows_per_thread(bsz, threads);
        let chunks = gx
            .chunks_mut(per * td)
            .zip(gdelta.chunks_mut(per * td))
            .zip(
                gb.chunks_mut((per * tn).max(1))
                    .zip(gc.chunks_mut((per * tn).max(1))),
            )
            .zip(
                ga_rows
                    .chunks_mut((per * di * n).max(1))
                    .zip(gd_rows.chunks_mut(per * di)),
            );
        std::thread::scope(|sc| {
            let mut first = None;
            for (i, (((x, delta), (b, c)), (a, d))) in chunks.enumerate() {
                let blocked = &blocked;
                let ch = Chunk {
                    row0: i * per,
                    x,
                    delta,
                    b,
                    c,
                    a,
                    d,
                };
                let run = move || match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `clamp_isa` returned this path only if the CPU supports it.
                    ScanIsa::Avx512 => unsafe { backward_rows_avx512(dims, blocked, inp, dy, ch) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above.
                    ScanIsa::Avx2 => unsafe { backward_rows_avx2(dims, blocked, inp, dy, ch) },
                    _ => backward_rows(dims, blocked, inp, dy, ch),
                };
                if i == 0 {
                    first = Some(run);
                } else {
                    sc.spawn(run);
                }
            }
            if let Some(run) = first {
                run(); // the calling thread takes the first range after spawning the others
            }
        });
    }
    // Sums over the batch in row order (independent of the thread count).
    let mut ga = vec![0.0; di * n];
    let mut gd = vec![0.0; di];
    for r in 0..bsz {
        for (acc, v) in ga.iter_mut().zip(&ga_rows[r * di * n..(r + 1) * di * n]) {
            *acc += v;
        }
        for (acc, v) in gd.iter_mut().zip(&gd_rows[r * di..(r + 1) * di]) {
            *acc += v;
        }
    }
    ScanGrads {
        x: gx,
        delta: gdelta,
        a: ga,
        b: gb,
        c: gc,
        d: gd,
    }
}

/// `isa` if this CPU supports it, else the widest path it does.
pub(crate) fn clamp_isa(isa: ScanIsa) -> ScanIsa {
    if isa.supported() {
        isa
    } else {
        ScanIsa::detect()
    }
}

#[cfg(test)]
#[path = "scan_kernel_tests.rs"]
mod tests;
