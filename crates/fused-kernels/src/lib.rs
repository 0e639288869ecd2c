//! Fused SIMD CPU kernels for squish's tiny language models.
//!
//! * [`PackedWeight`]: F32 / F16 / INT8 / INT4 (symmetric or asymmetric,
//!   grouped) weights validated from checkpoint parts and repacked for the
//!   kernels; [`PackedWeight::matvec`] / [`PackedWeight::matmul`] (float
//!   activations) and `*_q8` (int8 activations) with dequantization fused into
//!   the dot product.
//! * [`PackedWeight::from_codebook`]: 2/3/4-bit codebook weights ([`CodebookParts`]), decoded
//!   by an in-register table lookup on AVX2 / AVX-512 (float activations).
//! * [`Ops`]: RMSNorm, softmax and SwiGLU (RoPE, the SSM kernels and attention
//!   are the runtime's own, in `runtime/`).
//! * [`SimdLevel`] (squish-hwdiag's type, re-exported): scalar / AVX2 / AVX-512 /
//!   AVX-512+VNNI / NEON chosen at run time ([`dispatch`]); `SQUISH_SIMD` caps the path.
//! * INT4 × int8 activations on AVX2 use a row-interleaved copy of the codes
//!   (8 rows per 32-byte load, no horizontal sums; `interleave.rs`,
//!   `avx2/q4il.rs`), built at pack time.
//!
//! * [`runtime::Runtime`]: the native inference runtime for both model families
//!   (Llama, SsmMoe) built on these kernels.
//! * [`measure`]: what every squish stage reports on its checkpoint, measured the same way on
//!   the runtime (file bytes, parameters, `llama-cpp` perplexity, a greedy sample).
//! * [`speed`]: the runtime's speed on checkpoints ("prefill + decode" latency and tokens/s in
//!   interleaved rounds) — `cargo xtask bench` and the pipeline's `kernels` stage.
//!
//! No hot call allocates once its [`Scratch`] is large enough
//! ([`Scratch::for_weight`]).
#![deny(missing_docs)]
// Kernels take (weights, activations, strides, row/token ranges, output) by
// design, and register tiles are indexed `acc[i][j]` by row/token on purpose.
// `drive!` compares `r + R <= end` for generic tile heights (R may be 1).
#![allow(
    clippy::too_many_arguments,
    clippy::needless_range_loop,
    clippy::int_plus_one
)]

mod codebook;
pub mod dispatch;
mod error;
mod interleave;
mod matmul;
pub mod measure;
mod ops;
mod pack;
pub mod pool;
pub mod runtime;
mod scalar;
mod scratch;
mod shared_stage;
pub mod speed;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_cb;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod ops_avx2;
#[cfg(target_arch = "x86_64")]
mod stage_avx2;

/// The README's examples, compiled (and, where they need no pipeline files, run) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use codebook::CodebookParts;
pub use dispatch::SimdLevel;
pub use error::{KernelError, Result};
pub use matmul::{Activations, MatOpts};
pub use ops::Ops;
pub use pack::{CHUNK, PackedWeight, QuantFormat, QuantParts, RawWeight};
pub use scratch::{RmsNorm, Scratch};
