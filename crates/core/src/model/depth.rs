//! Whole blocks, framework-free: removing one (depth pruning) and silencing one (zeroing every
//! weight through which it writes the residual stream, which is what removing it computes).
//!
//! Block tensors are named `layers.{i}.…` in both families. Removing block `i` deletes its
//! tensors, renames blocks `i+1..` down by one and lowers the config's `n_layers`; burn and the
//! native runtime then load the shallower model like any other.

use crate::checkpoint::{WeightTensor, Weights};
use crate::config::ModelConfig;
use crate::model::structure::{DimKind, describe};
use crate::{Error, Result};

/// `(block, rest)` of a tensor named `layers.{block}.{rest}`.
fn block_of(name: &str) -> Option<(usize, &str)> {
    let tail = name.strip_prefix("layers.")?;
    let (idx, rest) = tail.split_once('.')?;
    Some((idx.parse().ok()?, rest))
}

fn set_n_layers(config: &mut ModelConfig, n: usize) {
    match config {
        ModelConfig::Llama(c) => c.n_layers = n,
        ModelConfig::SsmMoe(c) => c.n_layers = n,
    }
}

/// Removes block `layer`: its tensors are deleted, later blocks' tensors renamed down by one,
/// `n_layers` lowered. The last remaining block cannot be removed.
pub fn remove_block(config: &mut ModelConfig, w: &mut Weights, layer: usize) -> Result<()> {
    let n = config.n_layers();
    if layer >= n || n < 2 {
        return Err(Error::invalid(format!(
            "remove_block: block {layer} of a {n}-block model (at least one block must remain)"
        )));
    }
    let names: Vec<String> = w.iter().map(|(k, _)| k.clone()).collect();
    let mut moved: Vec<(String, WeightTensor)> = Vec::new();
    for name in names {
        let Some((i, rest)) = block_of(&name) else {
            continue;
        };
        if i >= n {
            return Err(Error::tensor(
                &name,
                format!("belongs to block {i} of a {n}-block model"),
            ));
        }
        if i < layer {
            continue;
        }
        let new = (i > layer).then(|| format!("layers.{}.{rest}", i - 1));
        let t = w
            .remove(&name)
            .ok_or_else(|| Error::tensor(&name, "missing from checkpoint"))?;
        if let Some(new) = new {
            moved.push((new, t));
        }
    }
    for (name, t) in moved {
        w.insert(name, t);
    }
    set_n_layers(config, n - 1);
    Ok(())
}

/// Zeroes every 2-D weight through which block `layer` writes the residual stream (the rows
/// of the residual dimension's output members in that block: `out_proj` and the experts' `w2`;
/// `wo` and `w2`), so the block adds nothing: the same function as [`remove_block`].
pub fn silence_block(config: &ModelConfig, w: &mut Weights, layer: usize) -> Result<()> {
    let s = describe(config, w)?;
    let resid = s
        .dims
        .iter()
        .find(|d| d.kind == DimKind::Residual)
        .ok_or_else(|| Error::invalid("silence_block: no residual dimension"))?;
    let mut silenced = 0;
    for m in &resid.members {
        let t = w.get(&m.tensor)?;
        if m.axis != 0 || t.shape.len() != 2 || block_of(&m.tensor).map(|b| b.0) != Some(layer) {
            continue;
        }
        let z = WeightTensor::f32(t.shape.clone(), vec![0.0; t.numel()])?;
        w.insert(m.tensor.clone(), z);
        silenced += 1;
    }
    if silenced == 0 {
        return Err(Error::invalid(format!(
            "silence_block: block {layer} writes nothing to the residual stream"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SsmMoeConfig;
    use crate::model::ssm_moe_weights::init_weights;

    fn tiny() -> (ModelConfig, Weights) {
        let c = SsmMoeConfig {
            d_model: 8,
            n_layers: 3,
            vocab_size: 16,
            seq_len: 16,
            d_inner: 8,
            d_state: 2,
            d_conv: 2,
            dt_rank: 1,
            n_experts: 2,
            top_k: 1,
            expert_hidden: 4,
            norm_eps: 1e-5,
        };
        let w = init_weights(&c, 3).unwrap();
        (ModelConfig::SsmMoe(c), w)
    }

    #[test]
    fn removing_a_block_renames_the_later_ones() {
        let (mut c, mut w) = tiny();
        let before = w.clone();
        remove_block(&mut c, &mut w, 1).unwrap();
        assert_eq!(c.n_layers(), 2);
        assert!(!w.contains("layers.2.ssm.D"));
        let moved = "layers.1.ssm.out_proj.weight";
        assert_eq!(
            w.get(moved).unwrap(),
            before.get("layers.2.ssm.out_proj.weight").unwrap()
        );
        assert_eq!(
            w.get("layers.0.ssm.D").unwrap(),
            before.get("layers.0.ssm.D").unwrap()
        );
        describe(&c, &w).unwrap().check_coverage(&w).unwrap();
        remove_block(&mut c, &mut w, 1).unwrap();
        assert!(
            remove_block(&mut c, &mut w, 0).is_err(),
            "the last block stays"
        );
        assert!(remove_block(&mut tiny().0, &mut tiny().1, 3).is_err());
    }

    #[test]
    fn silencing_zeroes_exactly_the_residual_writes() {
        let (c, mut w) = tiny();
        silence_block(&c, &mut w, 2).unwrap();
        for name in [
            "layers.2.ssm.out_proj.weight",
            "layers.2.moe.experts.0.w2.weight",
            "layers.2.moe.experts.1.w2.weight",
        ] {
            assert!(w.get(name).unwrap().to_f32().iter().all(|&x| x == 0.0));
        }
        let untouched = w.get("layers.1.ssm.out_proj.weight").unwrap().to_f32();
        assert!(untouched.iter().any(|&x| x != 0.0));
        assert!(silence_block(&c, &mut w, 7).is_err());
    }
}
