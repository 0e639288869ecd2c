//! squish-core: the crate every squish stage stands on.
//!
//! - [`config`]: model hyper-parameters; TOML loading with file/line/key errors.
//! - [`data`]: TinyStories readers, calibration subset, seeded RNG.
//! - [`tokenizer`]: the [`tokenizer::Tokenizer`] trait and llama2.c `tokenizer.bin`.
//! - [`model`]: tensor names, initialisation and prunable structure of the model families; with
//!   the `burn` feature, their burn modules and the CPU backend choice.
//! - [`llama2c`]: import of llama2.c legacy v0 checkpoints.
//! - [`quant`]: the packed INT4/INT8 byte layout.
//! - `baseline` (feature `burn`): the `baseline` stage — tokenizer + SsmMoe trained on TinyStories.
//! - [`codebook`]: the 2/3/4-bit codebook layout (per-tensor levels, group scales).
//! - [`checkpoint`]: the safetensors checkpoint format and the framework-free [`checkpoint::Weights`].
//! - [`eval`]: perplexity (protocol `llama-cpp`).
//! - [`sample`] / [`generate`]: llama2.c-exact sampling and generation loop.
//! - [`threads`]: the process-wide thread budget of squish's parallel code.
//! - [`heap`]: glibc heap thresholds that keep a training step's freed buffers for the next step.
//! - [`fsutil`]: atomic writes and hashing; [`shared`]: where the real data lives.
//! - `train` (feature `burn`): AdamW training of the burn models.
//!
//! Feature `burn` (default) compiles burn and everything that needs it: the burn models in
//! [`model`], their `LogitsModel`/`StepModel` impls, `model::CpuBackend` and `train`. Without it
//! (`default-features = false`) the crate is framework-free — enough to load a checkpoint and run
//! perplexity or generation on the native runtime of `squish-kernels`.
#![deny(missing_docs)]

#[cfg(feature = "burn")]
pub mod baseline;
pub mod checkpoint;
pub mod codebook;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod generate;
pub mod heap;
pub mod llama2c;
pub mod model;
pub mod quant;
pub mod sample;
pub mod shared;
pub mod threads;
pub mod tokenizer;
#[cfg(feature = "burn")]
pub mod train;

pub use error::{Error, Result};

/// The README's example (the `baseline` stage from Rust), compiled and run as a doc test.
#[cfg(all(doctest, feature = "burn"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
