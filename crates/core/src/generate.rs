//! Text generation with llama2.c's loop: BOS-prefixed prompt, forced prompt tokens, then sampled
//! tokens until `steps` positions or the end of the story (a BOS, as llama2.c's `run.c` stops, or
//! an EOS); pieces printed with llama2.c's `safe_printf` rule. [`Until::Steps`] runs a fixed
//! number of positions instead, going on into the next story.

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

/// When generation stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Until {
    /// At the end of the story (a sampled BOS or EOS) or after `steps` positions (the default).
    #[default]
    StoryEnd,
    /// After exactly `steps` positions (or the model's limit): a sampled BOS/EOS is fed back and
    /// printed as a blank line, so the model goes on with a new story.
    Steps,
}

/// Generates up to `steps` positions from `prompt`, stopping at the end of the story; `emit`
/// receives each printable piece as bytes. Returns the token sequence (prompt included).
pub fn generate(
    model: &mut dyn StepModel,
    tok: &dyn Tokenizer,
    prompt: &str,
    steps: usize,
    sampler: &mut Sampler,
    emit: impl FnMut(&[u8]),
) -> Result<Vec<u32>> {
    generate_until(model, tok, prompt, steps, Until::StoryEnd, sampler, emit)
}

/// [`generate`] with an explicit stopping rule.
pub fn generate_until(
    model: &mut dyn StepModel,
    tok: &dyn Tokenizer,
    prompt: &str,
    steps: usize,
    until: Until,
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
        let story_end = next == tok.bos_id() || next == tok.eos_id();
        match (story_end, until) {
            (true, Until::StoryEnd) => break,
            (true, Until::Steps) => emit(b"\n\n"),
            (false, _) => emit(printable_piece(&tok.decode_piece(token, next))),
        }
        out.push(next);
        token = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::train_bpe;

    /// A model that plays a fixed script of next tokens, whatever it is fed.
    struct Script(Vec<u32>, usize);

    impl StepModel for Script {
        fn step(&mut self, _token: u32, pos: usize) -> Result<Vec<f32>> {
            let mut logits = vec![0.0; self.1];
            logits[self.0[pos % self.0.len()] as usize] = 1.0;
            Ok(logits)
        }
        fn max_positions(&self) -> usize {
            64
        }
    }

    #[test]
    fn stops_at_the_end_of_the_story_unless_asked_for_steps() {
        let tok = train_bpe(&crate::data::synth::corpus(50, 1), 300).unwrap();
        // The byte-fallback piece of `a` (id 3 + byte): decodes to "a" with no space.
        let a = crate::tokenizer::BYTE_OFFSET + u32::from(b'a');
        let (bos, eos) = (tok.bos_id(), tok.eos_id());
        let vocab = tok.vocab_size();
        let run = |script: Vec<u32>, until| {
            let mut text = Vec::new();
            let ids = generate_until(
                &mut Script(script, vocab),
                &tok,
                "",
                6,
                until,
                &mut Sampler::new(0.0, 0.9, 1),
                |p| text.extend_from_slice(p),
            )
            .unwrap();
            (ids, String::from_utf8(text).unwrap())
        };
        // Position 0 is BOS; the script's first token is what follows it.
        let (ids, text) = run(vec![a, a, bos, a], Until::StoryEnd);
        assert_eq!(ids, vec![bos, a, a]);
        assert_eq!(text, "aa");
        let (ids, _) = run(vec![a, eos, a], Until::StoryEnd);
        assert_eq!(ids, vec![bos, a]);
        let (ids, text) = run(vec![a, bos, a], Until::Steps);
        assert_eq!(ids, vec![bos, a, bos, a, a, bos, a]);
        assert_eq!(text, "a\n\naa\n\na");
    }
}
