//! Text generation with llama2.c's loop: BOS-prefixed prompt, forced prompt tokens, then sampled
//! tokens until `steps` positions or a BOS; pieces printed with llama2.c's `safe_printf` rule.

use crate::sample::Sampler;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// A model that returns the next-token logits for position `pos` given the token at `pos`.
/// Callers feed positions in order from 0; implementations may cache state (KV, SSM state) or
/// recompute.
pub trait StepModel {
    /// Logits `[vocab]` after consuming `token` at position `pos`.
    fn step(&mut self, token: u32, pos: usize) -> Result<Vec<f32>>;
    /// Longest sequence the model accepts.
    fn max_positions(&self) -> usize;
}

/// llama2.c's `safe_printf` filter: single-byte pieces that are neither printable nor whitespace
/// are dropped.
pub fn printable_piece(piece: &[u8]) -> &[u8] {
    if piece.len() == 1 {
        let b = piece[0];
        if !(b.is_ascii_graphic() || b == b' ' || b.is_ascii_whitespace() || b == 0x0b) {
            return &[];
        }
    }
    piece
}

/// Generates up to `steps` positions from `prompt`; `emit` receives each printable piece as bytes.
/// Returns the token sequence (prompt included).
pub fn generate(
    model: &mut dyn StepModel,
    tok: &dyn Tokenizer,
    prompt: &str,
    steps: usize,
    sampler: &mut Sampler,
    mut emit: impl FnMut(&[u8]),
) -> Result<Vec<u32>> {
    let prompt_tokens = tok.encode(prompt, true, false);
    if prompt_tokens.is_empty() {
        return Err(Error::invalid("the prompt encoded to no tokens"));
    }
    let steps = steps.min(model.max_positions());
    let mut out = vec![prompt_tokens[0]];
    let mut token = prompt_tokens[0];
    let mut pos = 0;
    while pos < steps {
        let mut logits = model.step(token, pos)?;
        let next = if pos + 1 < prompt_tokens.len() {
            prompt_tokens[pos + 1]
        } else {
            sampler.sample(&mut logits) as u32
        };
        pos += 1;
        if next == tok.bos_id() {
            break;
        }
        emit(printable_piece(&tok.decode_piece(token, next)));
        out.push(next);
        token = next;
    }
    Ok(out)
}
