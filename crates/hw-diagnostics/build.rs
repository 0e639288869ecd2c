//! Captures toolchain facts at build time so the hardware report can say what built it.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rerun-if-env-changed=RUSTFLAGS");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    set("SQUISH_HWDIAG_RUSTC_VERSION", &version);
    set(
        "SQUISH_HWDIAG_TARGET",
        &std::env::var("TARGET").unwrap_or_default(),
    );
    set(
        "SQUISH_HWDIAG_PROFILE",
        &std::env::var("PROFILE").unwrap_or_default(),
    );
    set(
        "SQUISH_HWDIAG_OPT_LEVEL",
        &std::env::var("OPT_LEVEL").unwrap_or_default(),
    );
    // Target features enabled for the whole build (e.g. via -C target-cpu=native).
    set(
        "SQUISH_HWDIAG_STATIC_TARGET_FEATURES",
        &std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default(),
    );
    // Cargo features of this crate that are compiled in.
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase()))
        .collect();
    features.sort();
    set("SQUISH_HWDIAG_CRATE_FEATURES", &features.join(","));
}

fn set(key: &str, value: &str) {
    // Newlines would break the cargo directive; the values are single-line anyway.
    let value = value.replace(['\n', '\r'], " ");
    println!("cargo:rustc-env={key}={value}");
}
