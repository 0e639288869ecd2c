//! tokenizer.bin bytes → reader, then encode and decode a fixed text. Input layout: `u16 LE
//! vocab_size` (the file does not store it; the model config does), then the file bytes.
//! Every encoded id must be in the vocabulary and decoding must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};

/// ASCII, a multi-byte letter, an emoji (4-byte UTF-8), a NUL, a literal `<0x41>` and newlines.
const TEXT: &str =
    "Once upon a time, there was a little girl named Lily.\nShe said: \"héllo 😀\0 <0x41>\"\n\n";

fuzz_target!(|data: &[u8]| {
    let Some((vocab, file)) = data.split_first_chunk::<2>() else {
        return;
    };
    let vocab = u16::from_le_bytes(*vocab) as usize;
    let Ok(t) = Llama2cTokenizer::from_bytes(file, vocab) else {
        return;
    };
    assert_eq!(t.vocab_size(), vocab);
    for (bos, eos) in [(true, false), (false, true)] {
        let ids = t.encode(TEXT, bos, eos);
        assert!(ids.iter().all(|&id| (id as usize) < vocab), "{ids:?}");
        let _ = t.decode(&ids);
    }
    // Every id decodes after every special id.
    for id in 0..vocab as u32 {
        let _ = t.decode_piece(1, id);
        let _ = t.decode_piece(0, id);
    }
    let _ = t.decode(&[0, 1, 2, vocab as u32, u32::MAX]);
});
