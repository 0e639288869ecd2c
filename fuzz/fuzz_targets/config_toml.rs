//! Pipeline / model TOML → config load and validation, through squish-core's loader (the one
//! `PipelineConfig::load` uses: errors carry file, line, column and key). The text is parsed as a
//! whole pipeline document, and every table in it is tried as each burn-free typed section: a
//! model config of either family (then validated) and the `kernels` / `diagnostics` stage settings.
//! `PipelineConfig` itself lives in xtask, which needs burn; its order/input checks are walked by
//! `xtask/tests/cli_bad_input.rs` instead.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use squish_core::config::{LlamaConfig, ModelConfig, SsmMoeConfig, from_toml_str};

/// Tries `v` as every burn-free typed section (deserialized from the parsed value, no re-parse).
fn typed_sections(v: &toml::Value) {
    if let Ok(c) = v.clone().try_into::<ModelConfig>() {
        let _ = c.validate();
    }
    if let Ok(c) = v.clone().try_into::<SsmMoeConfig>() {
        let _ = c.validate();
    }
    if let Ok(c) = v.clone().try_into::<LlamaConfig>() {
        let _ = c.validate();
    }
    let _ = v
        .clone()
        .try_into::<squish_kernels::speed::KernelsSettings>();
    let _ = v
        .clone()
        .try_into::<squish_hwdiag::stage::DiagnosticsSettings>();
}

/// Visits every table (nested ones too, to a depth of 4).
fn walk(v: &toml::Value, depth: usize) {
    let toml::Value::Table(t) = v else {
        return;
    };
    typed_sections(v);
    if depth < 4 {
        for inner in t.values() {
            walk(inner, depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    // The loader's error path (line/column from the error span) on the whole document, and one
    // typed parse of it (type errors carry spans too).
    match from_toml_str::<toml::Table>(text, path) {
        Ok(doc) => walk(&toml::Value::Table(doc), 0),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz.toml"), "{msg}");
        }
    }
    if let Ok(c) = from_toml_str::<ModelConfig>(text, path) {
        let _ = c.validate();
    }
});
