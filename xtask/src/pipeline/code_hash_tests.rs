//! The code hashes themselves: the embedded table equals the sources', the documented stage table
//! and the crates each stage's files call agree with it, and the file resolver follows manifests
//! and module references (issue 15).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::code::{CodeTable, STAGES, embedded};
use super::code_hash::{self, hash_files};
use super::tests::workspace;

/// The hashes in this binary are those of the sources, recomputed now by the same function the
/// build script ran (`code_hash.rs` is compiled into both).
#[test]
fn embedded_hashes_equal_hashes_recomputed_from_the_sources() {
    let ws = workspace();
    let now = code_hash::compute(&ws).unwrap();
    assert_eq!(&now, embedded());
    // And spelled out for one crate: its files, hashed directly.
    let quant = ws.join("crates/quantization");
    let files = code_hash::crate_files(&quant).unwrap();
    assert!(files.contains(&"Cargo.toml".to_string()));
    assert!(files.contains(&"src/lib.rs".to_string()));
    let c = embedded()
        .crates
        .iter()
        .find(|c| c.name == "squish-quant")
        .unwrap();
    assert_eq!(c.hash, hash_files(&quant, &files).unwrap());
    assert_eq!(c.dir, "crates/quantization");
    // Every hashed file is under a `rerun-if-changed` path, so editing it rebuilds xtask.
    let watched = code_hash::watched(&ws, embedded());
    for c in &embedded().crates {
        for f in code_hash::crate_files(&ws.join(&c.dir)).unwrap() {
            let p = ws.join(&c.dir).join(f);
            assert!(watched.iter().any(|w| p.starts_with(w)), "{}", p.display());
        }
    }
    for f in &embedded().files {
        let p = ws.join("xtask/src").join(&f.path);
        assert!(watched.iter().any(|w| p.starts_with(w)), "{}", p.display());
    }
    // Every workspace crate is there.
    let names: BTreeSet<&str> = embedded().crates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "squish-core",
            "squish-hwdiag",
            "squish-kernels",
            "squish-mixed",
            "squish-prune",
            "squish-quant"
        ]
        .into_iter()
        .collect()
    );
}

/// The table in `pipeline/code.rs`'s docs is what the derivation gives today (update it there
/// when a manifest or a stage's modules change).
#[test]
fn stage_code_matches_the_documented_table() {
    let doc: &[(&str, &str, &str)] = &[
        ("diagnostics", "hwdiag", "cmd_diagnose.rs"),
        (
            "import",
            "core, kernels, hwdiag",
            "pipeline/import.rs, pipeline/summary.rs, cmd_import.rs, stage_data.rs, common.rs, report.rs",
        ),
        (
            "eval",
            "core, kernels, hwdiag",
            "pipeline/eval.rs, cmd_eval.rs, cmd_bench.rs, common.rs, report.rs",
        ),
        (
            "baseline",
            "core, kernels, hwdiag",
            "pipeline/baseline.rs, pipeline/summary.rs, stage_baseline.rs, stage_data.rs, common.rs, report.rs",
        ),
        (
            "int4_native",
            "core, quant, kernels, hwdiag",
            "stage_quant.rs, stage_data.rs, common.rs, report.rs",
        ),
        (
            "pruned",
            "core, prune, quant, kernels, hwdiag",
            "stage_prune.rs, stage_quant.rs, stage_data.rs, common.rs, report.rs",
        ),
        (
            "mixed_precision",
            "core, mixed, quant, kernels, hwdiag",
            "stage_mixed.rs, stage_quant.rs, stage_data.rs, common.rs, report.rs",
        ),
        (
            "kernels",
            "core, kernels, hwdiag",
            "stage_kernels.rs, report.rs",
        ),
        (
            "final_report",
            "core",
            "stage_final.rs, svg.rs, stage_data.rs, common.rs, report.rs",
        ),
    ];
    assert_eq!(doc.len(), STAGES.len());
    let t = embedded();
    for (stage, crates, files) in doc {
        let code = t.stage_code(stage).unwrap();
        let want: BTreeSet<String> = crates
            .split(", ")
            .map(|c| format!("squish-{c}"))
            .chain(files.split(", ").map(|f| format!("xtask/src/{f}")))
            .collect();
        let got: BTreeSet<String> = code.keys().cloned().collect();
        assert_eq!(got, want, "{stage}: update the table in pipeline/code.rs");
    }
}

/// Every `squish_*` crate a stage's xtask files call is in its crate set, except the documented
/// exceptions of `code::STAGES` (code that runs but does not shape the stage's outputs).
#[test]
fn stage_crates_cover_what_their_files_call() {
    let exceptions: BTreeMap<&str, &[&str]> = [
        ("import", &["squish-quant"][..]),
        ("baseline", &["squish-quant"][..]),
        ("final_report", &["squish-kernels", "squish-quant"][..]),
    ]
    .into_iter()
    .collect();
    let t = embedded();
    let src = workspace().join("xtask/src");
    let names: Vec<String> = t.crates.iter().map(|c| c.name.clone()).collect();
    for sc in STAGES {
        let crates = t.crate_closure(sc.crates).unwrap();
        let mut called = BTreeSet::new();
        for f in t.file_closure(sc.files).unwrap() {
            let text = std::fs::read_to_string(src.join(&f)).unwrap();
            for n in &names {
                if text.contains(&format!("{}::", n.replace('-', "_"))) {
                    called.insert(n.clone());
                }
            }
        }
        let missing: BTreeSet<&str> = called
            .iter()
            .filter(|c| !crates.contains(*c))
            .map(String::as_str)
            .collect();
        let allowed: BTreeSet<&str> = exceptions
            .get(sc.stage)
            .copied()
            .unwrap_or_default()
            .iter()
            .copied()
            .collect();
        assert_eq!(
            missing, allowed,
            "{}: crates called but not hashed",
            sc.stage
        );
    }
}

#[test]
fn manifest_dependencies_are_read_from_the_dependencies_tables() {
    let toml = r#"
[package]
name = "squish-x" # the name
version.workspace = true

[dependencies]
squish-core.workspace = true
squish-quant = { path = "../quantization" }
"squish-hwdiag" = "0.1"
serde.workspace = true

[dependencies.squish-prune]
path = "../pruning"

[target.'cfg(unix)'.dependencies]
squish-mixed.workspace = true

[dev-dependencies]
squish-kernels.workspace = true

[build-dependencies]
squish-other.workspace = true
"#;
    assert_eq!(code_hash::package_name(toml).as_deref(), Some("squish-x"));
    assert_eq!(
        code_hash::squish_deps(toml),
        [
            "squish-core",
            "squish-hwdiag",
            "squish-mixed",
            "squish-prune",
            "squish-quant"
        ]
    );
}

#[test]
fn module_references_resolve_to_files() {
    let known: Vec<String> = [
        "main.rs",
        "common.rs",
        "stage_data.rs",
        "stage_quant.rs",
        "svg.rs",
        "pipeline/mod.rs",
        "pipeline/summary.rs",
        "pipeline/baseline.rs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let src = r#"
use crate::common::progress_bar;
use crate::pipeline::Ctx;
use crate::{svg, stage_data::{a, b}};
use super::summary::own_summary;
use super::Ctx as C;
let x = squish_quant::pipeline::is_linear_weight(n); // not an xtask module
#[serde(default = "crate::stage_quant::default")]
"#;
    assert_eq!(
        code_hash::xtask_refs("pipeline/baseline.rs", src, &known),
        [
            "common.rs",
            "pipeline/mod.rs",
            "pipeline/summary.rs",
            "stage_data.rs",
            "stage_quant.rs",
            "svg.rs"
        ]
    );
    // Test modules do not run in a stage; code after them does.
    let with_tests = r##"
use crate::common::x;
#[cfg(test)]
mod tests {
    use crate::svg; // '}' "}" r#"}"# /* } */
    fn f<'a>(c: char) -> bool { c == '{' || c == '\'' }
}
fn after() { crate::stage_data::f() }
#[cfg(test)]
mod unclosed {
    use crate::stage_quant;
"##;
    assert_eq!(
        code_hash::xtask_refs("pipeline/baseline.rs", with_tests, &known),
        ["common.rs", "stage_data.rs", "stage_quant.rs"]
    );
    // In a top-level file `super` is the crate root.
    assert_eq!(
        code_hash::xtask_refs("stage_quant.rs", "use super::svg;", &known),
        ["svg.rs"]
    );
}

/// Hashes depend on relative paths and contents only: the same files elsewhere hash the same;
/// a renamed file or an edited byte does not.
#[test]
fn hashes_are_relative_paths_and_contents_only() {
    let base = std::env::temp_dir().join(format!("squish-code-hash-{}", std::process::id()));
    let (a, b) = (base.join("a"), base.join("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d.join("src/m")).unwrap();
        std::fs::write(d.join("Cargo.toml"), "[package]\nname = \"squish-t\"\n").unwrap();
        std::fs::write(d.join("src/lib.rs"), "pub mod m;\n").unwrap();
        std::fs::write(d.join("src/m/mod.rs"), "pub fn f() {}\n").unwrap();
        std::fs::write(d.join("src/.lib.rs.swp"), "editor noise").unwrap();
    }
    let hash = |d: &Path| hash_files(d, &code_hash::crate_files(d).unwrap()).unwrap();
    assert_eq!(
        code_hash::crate_files(&a).unwrap(),
        ["Cargo.toml", "src/lib.rs", "src/m/mod.rs"]
    );
    assert_eq!(hash(&a), hash(&b));
    std::fs::write(b.join("src/m/mod.rs"), "pub fn f() { }\n").unwrap();
    assert_ne!(hash(&a), hash(&b));
    std::fs::write(b.join("src/m/mod.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(b.join("build.rs"), "fn main() {}\n").unwrap();
    assert_ne!(hash(&a), hash(&b), "build.rs is part of the crate");
    std::fs::remove_file(b.join("build.rs")).unwrap();
    std::fs::rename(b.join("src/m/mod.rs"), b.join("src/m.rs")).unwrap();
    assert_ne!(hash(&a), hash(&b), "paths are hashed");
    // The text form round-trips.
    let t = embedded();
    assert_eq!(&CodeTable::from_text(&t.to_text()).unwrap(), t);
    let _ = std::fs::remove_dir_all(&base);
}
