//! Depth pruning: removing whole blocks, ranked by how much the model's output distribution
//! moves without them — the KL(full ‖ without block b) per token on the calibration windows
//! (Minitron's block importance). Blocks are scored once, on the unpruned model, and the
//! `count` least important removed together (highest index first, so the others keep their
//! indices while they go).

use burn::tensor::Device;
use squish_core::checkpoint::Weights;
use squish_core::config::ModelConfig;
use squish_core::model::depth::remove_block;
use squish_core::model::tensor_to_vec;
use squish_core::train::distill_kl;
use squish_core::{Error, Result};

use crate::net::Net;

/// Per block: mean KL(full ‖ model without the block) in nats/token over `windows` (batches
/// of 8 windows of equal length).
pub fn block_kl(
    config: &ModelConfig,
    w: &Weights,
    windows: &[Vec<u32>],
    device: &Device,
) -> Result<Vec<f64>> {
    if windows.is_empty() {
        return Err(Error::invalid(
            "depth pruning needs calibration windows (got none)",
        ));
    }
    let full = Net::build(config, w, device)?;
    let reference = windows
        .chunks(8)
        .map(|b| full.logits(b))
        .collect::<Result<Vec<_>>>()?; // per batch [batch, seq, vocab]
    let mut out = Vec::new();
    for b in 0..config.n_layers() {
        let (mut c, mut wb) = (config.clone(), w.clone());
        remove_block(&mut c, &mut wb, b)?;
        let net = Net::build(&c, &wb, device)?;
        let (mut sum, mut batches) = (0.0f64, 0usize);
        for (batch, teacher) in windows.chunks(8).zip(&reference) {
            let kl = distill_kl(net.logits(batch)?, teacher.clone(), 1.0); // [1]
            sum += tensor_to_vec(kl)?.first().copied().unwrap_or(0.0) as f64;
            batches += 1;
        }
        out.push(sum / batches.max(1) as f64);
    }
    Ok(out)
}

/// The `count` blocks with the lowest score (ties: the later block), ascending.
pub fn choose(scores: &[f64], count: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)));
    let mut v: Vec<usize> = idx.into_iter().take(count).collect();
    v.sort_unstable();
    v
}

/// Removes blocks `blocks` (any order) from `config`/`w`.
pub fn remove_blocks(config: &mut ModelConfig, w: &mut Weights, blocks: &[usize]) -> Result<()> {
    let mut v = blocks.to_vec();
    v.sort_unstable();
    v.dedup();
    for &b in v.iter().rev() {
        remove_block(config, w, b)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_takes_the_least_important_later_block_on_ties() {
        assert_eq!(choose(&[0.3, 0.1, 0.2], 1), vec![1]);
        assert_eq!(choose(&[0.3, 0.1, 0.2], 2), vec![1, 2]);
        assert_eq!(choose(&[0.1, 0.1, 0.5], 1), vec![1]);
        assert_eq!(choose(&[0.1], 0), Vec::<usize>::new());
    }
}
