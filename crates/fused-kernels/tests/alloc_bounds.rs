//! Allocation bounds of the native runtime: a config size that no tensor bytes back (`seq_len`,
//! which sizes the Llama KV cache and RoPE tables) is refused with an error naming it, not
//! allocated (a forged checkpoint must not be able to ask for gigabytes).

use std::path::Path;

use squish_core::config::ModelConfig;
use squish_core::llama2c;
use squish_kernels::runtime::{MAX_CONFIG_ALLOC_BYTES, Runtime, RuntimeOptions};

/// A llama2.c v0 model (zeros) with a 512-wide KV projection: 2 · 512 · seq_len · 4 bytes of cache.
fn wide_kv_model() -> (
    squish_core::config::LlamaConfig,
    squish_core::checkpoint::Weights,
) {
    let mut bytes: Vec<u8> = [512i32, 8, 1, 2, 2, 8, 4]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let (_, n) = llama2c::parse_header(&bytes, Path::new("wide.bin")).unwrap();
    bytes.resize(bytes.len() + 4 * n, 0);
    llama2c::import_bytes(&bytes, Path::new("wide.bin")).unwrap()
}

#[test]
fn seq_len_beyond_the_buffer_limit_is_an_error() {
    let (mut cfg, w) = wide_kv_model();
    cfg.seq_len = 1 << 20; // the config's own upper bound: 4 GiB of KV cache here
    let err = Runtime::from_weights(
        &ModelConfig::Llama(cfg.clone()),
        &w,
        RuntimeOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("seq_len") && err.contains(&MAX_CONFIG_ALLOC_BYTES.to_string()),
        "{err}"
    );
    // A modest seq_len still loads and runs.
    cfg.seq_len = 4096;
    let mut rt =
        Runtime::from_weights(&ModelConfig::Llama(cfg), &w, RuntimeOptions::default()).unwrap();
    assert_eq!(rt.max_positions(), 4096);
    assert_eq!(rt.step(1).unwrap().len(), 8);
}
