//! The model families: framework-free tensor names, initialisation and structure, and — with the
//! default `burn` feature — the burn modules and the backend choice.
//!
//! Every burn model is built from a framework-free [`crate::checkpoint::Weights`] map and can be
//! turned back into one, so stages that need autodiff (training, QAT, recovery) and stages that do
//! not (the native runtime, which needs no burn) share the same checkpoint format.

pub mod depth;
pub mod llama_names;
pub mod ssm_moe_weights;
pub mod structure;

#[cfg(feature = "burn")]
pub mod act_kernel;
#[cfg(feature = "burn")]
pub mod act_op;
#[cfg(feature = "burn")]
mod backend;
#[cfg(feature = "burn")]
pub(crate) mod lanes;
#[cfg(feature = "burn")]
pub mod llama;
#[cfg(feature = "burn")]
pub mod moe_routed;
#[cfg(feature = "burn")]
mod ops;
#[cfg(feature = "burn")]
pub mod scan_bench;
#[cfg(feature = "burn")]
pub mod scan_kernel;
#[cfg(feature = "burn")]
pub mod scan_op;
#[cfg(feature = "burn")]
mod scan_rows;
#[cfg(feature = "burn")]
pub mod softmax_kernel;
#[cfg(feature = "burn")]
pub mod softmax_op;
#[cfg(feature = "burn")]
pub mod ssm_moe;
#[cfg(feature = "burn")]
mod ssm_moe_io;
#[cfg(feature = "burn")]
pub mod ssm_moe_step;
#[cfg(feature = "burn")]
pub mod ssm_scan;

#[cfg(feature = "burn")]
pub use backend::CpuBackend;
#[cfg(feature = "burn")]
pub use ops::{param1, param2, tensor_to_vec};
