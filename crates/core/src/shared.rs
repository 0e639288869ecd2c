//! Where the real data lives: `../shared/data` beside the checkout, or `$SQUISH_SHARED_DATA`.
//!
//! squish never ships TinyStories or stories260K; it reads them from here. Tests that need them
//! call [`require_for_test`]: in CI (`CI=true`) a missing file fails the test with a clear message,
//! elsewhere the test prints a notice and skips.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the shared data directory.
pub const SHARED_DATA_ENV: &str = "SQUISH_SHARED_DATA";

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // crates/core → ../..
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The shared data directory if it exists: `$SQUISH_SHARED_DATA`, else `<workspace>/../shared/data`.
pub fn shared_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(SHARED_DATA_ENV) {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let dir = workspace_root().join("../shared/data");
    dir.is_dir().then_some(dir)
}

/// A file below the shared data directory, if present (`rel` like `tinystories/valid.txt`).
pub fn shared_file(rel: &str) -> Option<PathBuf> {
    shared_data_dir()
        .map(|d| d.join(rel))
        .filter(|p| p.is_file())
}

/// True when running under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// For tests: the shared file `rel`, or `None` (with a printed notice) when it is absent outside
/// CI. Under CI a missing file panics with a message naming the path searched.
pub fn require_for_test(rel: &str) -> Option<PathBuf> {
    match shared_file(rel) {
        Some(p) => Some(p),
        None => {
            let searched = std::env::var(SHARED_DATA_ENV).unwrap_or_else(|_| {
                workspace_root()
                    .join("../shared/data")
                    .display()
                    .to_string()
            });
            if in_ci() {
                panic!(
                    "CI=true but the shared data file `{rel}` is missing (searched {searched}); CI must provide ../shared/data"
                );
            }
            eprintln!("NOTICE: skipping: shared data file `{rel}` not found under {searched}");
            None
        }
    }
}
