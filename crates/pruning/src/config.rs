//! The stage's configuration, input, events and output.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use squish_core::checkpoint::Checkpoint;
use squish_core::config::ModelConfig;
use squish_core::model::structure::DimKind;
use squish_core::train::{TrainConfig, TrainPoint};

/// How a unit's importance is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    /// Σ|w| over the group's members.
    MagnitudeL1,
    /// ‖w‖₂ over the group's members.
    #[default]
    MagnitudeL2,
    /// Wanda: Σ|w_ij|·‖X_j‖ with calibration inputs X.
    Wanda,
    /// First-order Taylor: Σ|w·∂L/∂w| over calibration batches.
    Taylor,
    /// Activation (Minitron): a unit scores the mean |x| of the inputs it feeds, over the
    /// calibration tokens, summed over its members that read it as an input column (inputs
    /// shared by several members — wq/wk/wv, the router and every expert's w1/w3 — count once).
    /// A residual channel thus scores Σ over every RMSNorm output of mean |x_j|; an FFN/expert
    /// channel the mean |activation| entering w2. Dimensions no captured input reads (whole
    /// experts) fall back to L1 magnitude.
    Activation,
}

/// Which kind of dependency group to prune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Hidden channels of MoE experts.
    MoeChannels,
    /// Whole experts (router row + expert).
    Experts,
    /// SSM `d_inner` channels (needs `preserve_ssm = false`).
    SsmChannels,
    /// Llama FFN hidden channels.
    FfnChannels,
    /// Llama attention heads (a kv head with its query heads).
    Heads,
    /// Residual-stream channels (`d_model`, both families): embedding/classifier columns, norm
    /// gains and every projection column/row on the residual stream.
    DModel,
}

impl GroupKind {
    /// The structural dimension kind this targets.
    pub fn dim_kind(self) -> DimKind {
        match self {
            GroupKind::MoeChannels => DimKind::ExpertChannels,
            GroupKind::Experts => DimKind::Experts,
            GroupKind::SsmChannels => DimKind::SsmChannels,
            GroupKind::FfnChannels => DimKind::FfnChannels,
            GroupKind::Heads => DimKind::KvHeads,
            GroupKind::DModel => DimKind::Residual,
        }
    }
}

/// The group kinds a family prunes when none are named: MoE expert channels and whole experts
/// (SsmMoe; SSM channels only on request), FFN channels and heads (Llama).
pub fn default_targets(model: &ModelConfig) -> Vec<GroupKind> {
    match model {
        ModelConfig::SsmMoe(_) => vec![GroupKind::MoeChannels, GroupKind::Experts],
        ModelConfig::Llama(_) => vec![GroupKind::FfnChannels, GroupKind::Heads],
    }
}

/// How the parameter budget is spread over the dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    /// Rank all eligible units together (normalised per kind and layer).
    #[default]
    Global,
    /// Remove the same fraction of every eligible dimension.
    Uniform,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Configuration of the pruning stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneConfig {
    /// Fraction of the non-embedding parameters (whole model) to remove, in `[0, 1)`.
    pub ratio: f32,
    /// Importance criterion.
    pub importance: Importance,
    /// Group kinds that may be pruned.
    pub targets: Vec<GroupKind>,
    /// Refuse to touch SSM channels (default true).
    pub preserve_ssm: bool,
    /// Global or uniform allocation.
    pub allocation: Allocation,
    /// Minimum kept channels per channel dimension (experts keep ≥ top_k, layers ≥ 1 head).
    pub min_width: usize,
    /// Round kept channel widths to a multiple of this (0 or 1 = off).
    pub round_to: usize,
    /// Pruning rounds (iterative pruning when > 1; each round removes an equal share).
    pub rounds: usize,
    /// Recovery fine-tuning after each round (distillation from the unpruned model); `None` or
    /// `steps = 0` = no recovery.
    pub recover: Option<TrainConfig>,
    /// Calibration windows used for Wanda/Taylor/expert utilisation.
    pub calib_windows: usize,
    /// Seed (mixed into each round's recovery sampler).
    pub seed: u64,
    /// Weight expert scores by the expert's routing utilisation (not for Taylor, whose gradients
    /// already see the gates).
    pub expert_utilisation: bool,
    /// After width (`d_model`) pruning, rescale every RMSNorm so it computes what it computed
    /// with the removed channels present and zero (gains × √(d/d'), ε × d/d'; see
    /// [`crate::groups::rescale_norms`]). Without it the kept channels are normalised by the
    /// mean square over d' instead of d channels.
    pub rescale_norms: bool,
    /// Depth pruning: before the first round, remove this many whole blocks — those whose
    /// removal moves the output distribution least (KL on the calibration windows,
    /// [`crate::depth::block_kl`]). 0 (default) keeps every block. The removed parameters count
    /// toward `ratio`; the rounds' width/channel pruning removes the rest.
    #[serde(skip_serializing_if = "is_zero")]
    pub remove_blocks: usize,
    /// Context of the validation measurements (llama-cpp chunks).
    pub eval_ctx: usize,
    /// Validation chunks per measurement.
    pub eval_chunks: usize,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            ratio: 0.3,
            importance: Importance::Wanda,
            targets: vec![GroupKind::MoeChannels, GroupKind::Experts],
            preserve_ssm: true,
            allocation: Allocation::Global,
            min_width: 8,
            round_to: 0,
            rounds: 1,
            recover: None,
            calib_windows: 32,
            seed: 0,
            expert_utilisation: true,
            rescale_norms: true,
            remove_blocks: 0,
            eval_ctx: 256,
            eval_chunks: 16,
        }
    }
}

/// The data the stage reads.
#[derive(Debug, Clone, Copy)]
pub struct PruneData<'a> {
    /// Calibration windows (token rows, BOS first; equal lengths are batched together).
    pub calib: &'a [Vec<u32>],
    /// Tokenized training stream (recovery).
    pub train: &'a [u32],
    /// Tokenized validation stream (measurements; may be empty to skip them).
    pub valid: &'a [u32],
    /// BOS id.
    pub bos: u32,
}

/// What [`crate::run`] prunes: the F32 checkpoint and its token data.
#[derive(Debug, Clone, Copy)]
pub struct PruneInput<'a> {
    /// The checkpoint to prune (F32 tensors).
    pub ckpt: &'a Checkpoint,
    /// Calibration, training and validation tokens.
    pub data: PruneData<'a>,
}

/// What [`crate::run`] returns.
#[derive(Debug, Clone)]
pub struct StageOutput {
    /// The smaller checkpoint (F32; provenance `stage = "prune"`).
    pub checkpoint: Checkpoint,
    /// What was removed, per round, and how the model recovered.
    pub report: PruneReport,
}

/// Progress of the stage.
#[derive(Debug, Clone, PartialEq)]
pub enum PruneEvent {
    /// A round starts; `target_removed` non-embedding parameters gone after it.
    RoundStart {
        /// 1-based round.
        round: usize,
        /// Rounds in total.
        rounds: usize,
        /// Cumulative non-embedding parameters to have removed after this round.
        target_removed: usize,
    },
    /// Units removed; `params` total left.
    Pruned {
        /// 1-based round.
        round: usize,
        /// Total parameters now.
        params: usize,
    },
    /// A recovery training point.
    Train {
        /// 1-based round.
        round: usize,
        /// The point.
        point: TrainPoint,
    },
    /// A validation measurement.
    Valid {
        /// 1-based round (0 = unpruned model).
        round: usize,
        /// `before_recovery` or `after_recovery` (`unpruned` for round 0).
        when: &'static str,
        /// nats/token.
        nats: f64,
    },
}

/// One round of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundReport {
    /// 1-based round.
    pub round: usize,
    /// Non-embedding parameters after the round.
    pub non_embedding_params: usize,
    /// Validation nats/token right after pruning.
    pub valid_nats_before_recovery: Option<f64>,
    /// Validation nats/token after recovery (when recovery ran).
    pub valid_nats_after_recovery: Option<f64>,
    /// Recovery training log.
    pub recovery_log: Vec<TrainPoint>,
    /// Wall seconds of the round.
    pub seconds: f64,
}

/// What the stage did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PruneReport {
    /// Importance criterion used.
    pub importance: Importance,
    /// Allocation used.
    pub allocation: Allocation,
    /// Group kinds pruned.
    pub targets: Vec<GroupKind>,
    /// Total parameters before.
    pub params_before: usize,
    /// Total parameters after.
    pub params_after: usize,
    /// Non-embedding parameters before.
    pub non_embedding_before: usize,
    /// Non-embedding parameters after.
    pub non_embedding_after: usize,
    /// Requested fraction of non-embedding parameters to remove.
    pub requested_ratio: f64,
    /// Achieved fraction.
    pub achieved_ratio: f64,
    /// Widths of every prunable dimension before (`name → units`).
    pub widths_before: BTreeMap<String, usize>,
    /// Widths after.
    pub widths_after: BTreeMap<String, usize>,
    /// Validation nats/token of the unpruned model.
    pub valid_nats_unpruned: Option<f64>,
    /// Per-round details.
    pub rounds: Vec<RoundReport>,
    /// Blocks removed by depth pruning (indices in the unpruned model) with their KL scores
    /// (nats/token), in block order; empty without `remove_blocks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_blocks: Vec<(usize, f64)>,
    /// Recovery budget per round (steps × batch × seq tokens), 0 when none.
    pub recovery_tokens_per_round: usize,
    /// Wall seconds of the whole stage.
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::config::{LlamaConfig, SsmMoeConfig};

    /// Each family's default targets are what `PruneConfig::validate` accepts for it, and a
    /// Llama model is not pruned with PruneConfig's SsmMoe default.
    #[test]
    fn default_targets_fit_their_family() {
        let ssm = ModelConfig::SsmMoe(SsmMoeConfig {
            d_model: 16,
            n_layers: 1,
            vocab_size: 32,
            seq_len: 32,
            d_inner: 16,
            d_state: 4,
            d_conv: 4,
            dt_rank: 2,
            n_experts: 2,
            top_k: 1,
            expert_hidden: 16,
            norm_eps: 1e-5,
        });
        let llama = ModelConfig::Llama(LlamaConfig {
            dim: 16,
            hidden_dim: 24,
            n_layers: 1,
            n_heads: 4,
            n_kv_heads: 2,
            vocab_size: 32,
            seq_len: 32,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
        });
        for model in [&ssm, &llama] {
            let cfg = PruneConfig {
                targets: default_targets(model),
                ..PruneConfig::default()
            };
            cfg.validate(model).unwrap();
        }
        assert_eq!(default_targets(&ssm), PruneConfig::default().targets);
        assert!(PruneConfig::default().validate(&llama).is_err());
    }
}
