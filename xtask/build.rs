//! Embeds the code hashes of every workspace crate and every `xtask/src` file (see
//! `src/pipeline/code_hash.rs`, compiled into this script and into xtask alike) as
//! `$OUT_DIR/code_hashes.txt`; the pipeline puts them into stage fingerprints, so a stage reruns
//! when the code it runs changes. Every hashed file and directory is a `rerun-if-changed` path.

#[allow(dead_code)]
#[path = "src/pipeline/code_hash.rs"]
mod code_hash;

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest
        .parent()
        .expect("xtask lives in the workspace root");
    let table = code_hash::compute(workspace).expect("hashing the workspace sources");
    for p in code_hash::watched(workspace, &table) {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("code_hashes.txt");
    std::fs::write(&out, table.to_text()).expect("writing code_hashes.txt");
}
