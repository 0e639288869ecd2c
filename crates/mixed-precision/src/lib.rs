#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! 1. **Variants** ([`candidates`]): every quantizable tensor in every candidate format, with the
//!    calibration-aware method (GPTQ vs weighted MSE, best layer-output error; MSE vs RTN without
//!    statistics). These exact bytes are measured *and* stored.
//! 2. **Sensitivity** ([`sensitivity`]): the calibration loss with only that tensor changed, on
//!    the native runtime: mean KL(F32 ‖ candidate) and Δnats per token. Cached as JSON keyed by
//!    checkpoint, calibration, statistics and candidates.
//! 3. **Allocation** ([`solve`]): an exact multiple-choice knapsack DP over bytes; its last row
//!    is the whole frontier, so "least loss under N bytes" and the dual "fewest bytes with loss ≤
//!    X" come from one table. The real file size (`checkpoint::to_bytes`, header included) is
//!    checked and the budget tightened until it fits ([`budget`]).
//! 4. **Check**: measured perplexity of the chosen mix vs the prediction (sum of per-tensor
//!    Δnats), a fitted additivity factor, the HAWQ-style proxy's Spearman ρ, and the Pareto
//!    frontier with uniform INT4/INT8 points ([`report`], SVG by [`frontier_svg`]).
//!
//! The stage as the pipeline runs it: [`run`] with [`MixedStageConfig`] (mix + optional QAT of
//! the mix), [`check_budget`]; the algorithm alone: [`mixed_checkpoint`].
#![deny(missing_docs)]

mod budget;
pub mod candidates;
pub mod config;
pub mod mix;
pub mod pipeline;
pub mod report;
pub mod sensitivity;
pub mod solve;
pub mod stage;
pub mod svg;

pub use config::{
    Budget, CandidateFormat, MixedConfig, Objective, codebook_candidates, default_candidates,
};
pub use pipeline::mixed_checkpoint;
pub use report::{FrontierPoint, MixedReport, PointKind, TensorChoice};
pub use squish_quant::StageInput;
pub use stage::{
    MixedData, MixedEvent, MixedStageConfig, MixedStageReport, QAT_RESERVE_BYTES, StageOutput,
    check_budget, qat_plan, run,
};
pub use svg::frontier_svg;
