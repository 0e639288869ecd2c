//! llama2.c model + tokenizer bytes → import, as `cargo xtask import-llama2c` does it: parse the
//! v0 checkpoint, read the tokenizer with the model's vocabulary, build the squish checkpoint and
//! serialize it. Input layout: `u32 LE model_len`, `model_len` model bytes, the tokenizer bytes.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use squish_core::checkpoint::{self, Checkpoint, Provenance};
use squish_core::config::ModelConfig;
use squish_core::llama2c;
use squish_core::tokenizer::{Llama2cTokenizer, Tokenizer};

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (model, tok) = rest.split_at(len);
    let Ok((cfg, weights)) = llama2c::import_bytes(model, Path::new("model.bin")) else {
        return;
    };
    let Ok(tokenizer) = Llama2cTokenizer::from_bytes(tok, cfg.vocab_size) else {
        return;
    };
    assert_eq!(tokenizer.vocab_size(), cfg.vocab_size);
    let ckpt = Checkpoint {
        config: ModelConfig::Llama(cfg),
        weights,
        provenance: Provenance::default(),
        metrics: BTreeMap::new(),
        tokenizer: None,
    };
    let bytes = checkpoint::to_bytes(&ckpt).expect("an imported model serializes");
    let back = checkpoint::load_bytes(&bytes).expect("an imported model loads back");
    assert_eq!(back, ckpt);
});
