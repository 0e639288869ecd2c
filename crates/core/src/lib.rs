//! squish-core: the crate every squish stage stands on.
//!
//! - [`config`]: model hyper-parameters; TOML loading with file/line/key errors.
//! - [`data`]: TinyStories readers, calibration subset, seeded RNG.
//! - [`tokenizer`]: the [`tokenizer::Tokenizer`] trait and llama2.c `tokenizer.bin`.
//! - [`model`]: burn modules (Llama family) and the CPU backend choice.
//! - [`llama2c`]: import of llama2.c legacy v0 checkpoints.
//! - [`quant`]: the packed INT4/INT8 byte layout.
//! - [`checkpoint`]: the safetensors checkpoint format and the framework-free [`checkpoint::Weights`].
//! - [`eval`]: perplexity (protocol `llama-cpp`).
//! - [`sample`] / [`generate`]: llama2.c-exact sampling and generation loop.
//! - [`fsutil`]: atomic writes and hashing; [`shared`]: where the real data lives.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod generate;
pub mod llama2c;
pub mod model;
pub mod quant;
pub mod sample;
pub mod shared;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
