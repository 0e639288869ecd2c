//! Configuration: model hyper-parameters and TOML loading with errors that name the file, the
//! line and the key.

use std::path::Path;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Error, Result};

/// Hyper-parameters of a Llama-family model (llama2.c conventions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    /// Model width.
    pub dim: usize,
    /// Nominal FFN hidden width (per-layer widths come from the tensors, so pruning may differ).
    pub hidden_dim: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum sequence length (RoPE table size).
    pub seq_len: usize,
    /// True when the classifier shares the token-embedding matrix.
    pub shared_classifier: bool,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
}

fn default_norm_eps() -> f32 {
    1e-5
}
fn default_rope_theta() -> f32 {
    10000.0
}

impl LlamaConfig {
    /// Head width `dim / n_heads`.
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Checks the relations between the fields; errors name the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, msg: String| Err(Error::invalid(format!("model config `{key}`: {msg}")));
        for (key, v) in [
            ("dim", self.dim),
            ("hidden_dim", self.hidden_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("vocab_size", self.vocab_size),
            ("seq_len", self.seq_len),
        ] {
            if v == 0 || v > 1 << 20 {
                return bad(key, format!("{v} is not in 1..=1048576"));
            }
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            return bad(
                "n_heads",
                format!(
                    "dim {} is not a multiple of n_heads {}",
                    self.dim, self.n_heads
                ),
            );
        }
        if !self.head_size().is_multiple_of(2) {
            return bad(
                "n_heads",
                format!("head size {} must be even for RoPE", self.head_size()),
            );
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "n_kv_heads",
                format!(
                    "n_heads {} is not a multiple of n_kv_heads {}",
                    self.n_heads, self.n_kv_heads
                ),
            );
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return bad("norm_eps", format!("{} must be positive", self.norm_eps));
        }
        // RoPE frequencies are theta^(-2i/hs): a base <= 1 or non-finite gives NaN/Inf angles.
        if !(self.rope_theta > 1.0 && self.rope_theta.is_finite()) {
            return bad(
                "rope_theta",
                format!("{} must be a finite number > 1", self.rope_theta),
            );
        }
        Ok(())
    }
}

/// Hyper-parameters of the SsmMoe family: L blocks of `x += SSM(RMSNorm(x)); x += MoE(RMSNorm(x))`
/// with a Mamba-style selective SSM and a top-k mixture of SwiGLU experts. Nominal widths; the
/// per-layer `d_inner`, per-layer expert count and per-expert hidden widths are read from the
/// tensors, so pruned checkpoints load too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsmMoeConfig {
    /// Model width.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Vocabulary size (embedding tied to the classifier).
    pub vocab_size: usize,
    /// Longest sequence used in training/evaluation (the recurrence itself has no limit).
    pub seq_len: usize,
    /// SSM inner width (nominal).
    pub d_inner: usize,
    /// SSM state size N.
    pub d_state: usize,
    /// Causal depthwise convolution width.
    pub d_conv: usize,
    /// Rank of the Δ projection.
    pub dt_rank: usize,
    /// Experts per layer (nominal).
    pub n_experts: usize,
    /// Experts each token is routed to.
    pub top_k: usize,
    /// Hidden width of each SwiGLU expert (nominal).
    pub expert_hidden: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
}

impl SsmMoeConfig {
    /// Checks the relations between the fields; errors name the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |key: &str, msg: String| Err(Error::invalid(format!("model config `{key}`: {msg}")));
        for (key, v) in [
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("vocab_size", self.vocab_size),
            ("seq_len", self.seq_len),
            ("d_inner", self.d_inner),
            ("d_state", self.d_state),
            ("d_conv", self.d_conv),
            ("dt_rank", self.dt_rank),
            ("n_experts", self.n_experts),
            ("top_k", self.top_k),
            ("expert_hidden", self.expert_hidden),
        ] {
            if v == 0 || v > 1 << 20 {
                return bad(key, format!("{v} is not in 1..=1048576"));
            }
        }
        if self.top_k > self.n_experts {
            return bad(
                "top_k",
                format!("{} exceeds n_experts {}", self.top_k, self.n_experts),
            );
        }
        if self.d_conv > 16 {
            return bad("d_conv", format!("{} is larger than 16", self.d_conv));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return bad("norm_eps", format!("{} must be positive", self.norm_eps));
        }
        Ok(())
    }
}

/// A model configuration of any supported family; serialized with an `arch` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum ModelConfig {
    /// Llama family (llama2.c import).
    Llama(LlamaConfig),
    /// The user's state-space + mixture-of-experts family.
    SsmMoe(SsmMoeConfig),
}

impl ModelConfig {
    /// The `squish.arch` string of this family.
    pub fn arch(&self) -> &'static str {
        match self {
            ModelConfig::Llama(_) => "llama",
            ModelConfig::SsmMoe(_) => "ssm_moe",
        }
    }
    /// Blocks (layers).
    pub fn n_layers(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.n_layers,
            ModelConfig::SsmMoe(c) => c.n_layers,
        }
    }
    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Llama(c) => c.vocab_size,
            ModelConfig::SsmMoe(c) => c.vocab_size,
        }
    }
    /// RMSNorm epsilon.
    pub fn norm_eps(&self) -> f32 {
        match self {
            ModelConfig::Llama(c) => c.norm_eps,
            ModelConfig::SsmMoe(c) => c.norm_eps,
        }
    }
    /// Sets the RMSNorm epsilon (width pruning rescales it, see `squish_prune::groups`).
    pub fn set_norm_eps(&mut self, eps: f32) {
        match self {
            ModelConfig::Llama(c) => c.norm_eps = eps,
            ModelConfig::SsmMoe(c) => c.norm_eps = eps,
        }
    }
    /// Validates the configuration.
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Llama(c) => c.validate(),
            ModelConfig::SsmMoe(c) => c.validate(),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`. An offset past the end
/// counts as the end; one inside a multi-byte character counts as that character's start.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses TOML text into `T`. Errors carry `path`, line, column and the key toml reports.
pub fn from_toml_str<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let loc = e.span().map(|s| line_col(text, s.start));
        let message = match loc {
            Some((line, col)) => format!("line {line}, column {col}: {}", e.message()),
            None => e.message().to_string(),
        };
        Error::Config {
            path: path.to_path_buf(),
            message,
        }
    })
}

/// Reads and parses a TOML file into `T` (see [`from_toml_str`]).
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading config", path, e))?;
    from_toml_str(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Demo {
        name: String,
        ctx: usize,
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let err = from_toml_str::<Demo>(
            "name = \"x\"\nctx = \"oops\"\n",
            Path::new("configs/demo.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("configs/demo.toml"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = from_toml_str::<Demo>("name = \"x\"\nctx = 3\nbogus = 1\n", Path::new("d.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("bogus"), "{err}");
        let err = from_toml_str::<Demo>("name = \"x\n", Path::new("d.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn line_col_never_splits_a_character() {
        // Found by fuzzing (config_toml): a toml error span inside a multi-byte character.
        let text = "a = \"é\"\n€x";
        for off in 0..=text.len() + 2 {
            let (line, col) = line_col(text, off);
            assert!(line >= 1 && col >= 1);
        }
        assert_eq!(line_col(text, 10), (2, 1)); // inside '€' (bytes 9..12): its start
        assert_eq!(line_col(text, 12), (2, 2));
        assert_eq!(line_col(text, 99), (2, 3));
    }

    #[test]
    fn llama_config_validation_names_the_key() {
        let mut c = LlamaConfig {
            dim: 64,
            hidden_dim: 172,
            n_layers: 5,
            n_heads: 8,
            n_kv_heads: 3,
            vocab_size: 512,
            seq_len: 512,
            shared_classifier: true,
            norm_eps: 1e-5,
            rope_theta: 1e4,
        };
        assert!(c.validate().unwrap_err().to_string().contains("n_kv_heads"));
        c.n_kv_heads = 4;
        c.validate().unwrap();
        for theta in [f32::NAN, f32::INFINITY, 0.0, 1.0, -5.0] {
            let bad = LlamaConfig {
                rope_theta: theta,
                ..c.clone()
            };
            assert!(
                bad.validate()
                    .unwrap_err()
                    .to_string()
                    .contains("rope_theta"),
                "{theta}"
            );
        }
        let json = serde_json::to_string(&ModelConfig::Llama(c.clone())).unwrap();
        assert!(json.contains("\"arch\":\"llama\""));
        assert_eq!(
            serde_json::from_str::<ModelConfig>(&json).unwrap(),
            ModelConfig::Llama(c)
        );
    }
}
