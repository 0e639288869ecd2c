//! Checkpoint bytes → native runtime load + a two-token prefill and one decode step. Whatever the
//! strict loader accepts, the runtime either refuses with an error or runs (finite or not, the
//! logits have the vocabulary's length); never a panic, never an out-of-bounds access.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squish_core::checkpoint;
use squish_kernels::runtime::{Runtime, RuntimeOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(ckpt) = checkpoint::load_bytes(data) else {
        return;
    };
    let opts = RuntimeOptions {
        max_batch: 4,
        ..RuntimeOptions::default()
    };
    let Ok(mut rt) = Runtime::load_with(&ckpt, opts) else {
        return;
    };
    let vocab = rt.vocab_size() as u32;
    let tok = |i: u32| i % vocab;
    if let Ok(logits) = rt.prefill(&[tok(1), tok(7)]) {
        assert_eq!(logits.len(), vocab as usize);
    }
    if let Ok(logits) = rt.step(tok(3)) {
        assert_eq!(logits.len(), vocab as usize);
    }
});
