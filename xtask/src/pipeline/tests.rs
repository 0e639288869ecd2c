//! Fingerprints include the code: which stages a code change reruns, and that the hashes embedded
//! at build time are the sources' (issue 15).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::code::{CodeTable, STAGES, embedded};
use super::code_hash::{self, hash_files};
use super::{Ctx, PipelineConfig, Stamp, Status, stages, status, write_stamp};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the workspace")
        .to_path_buf()
}

/// A shipped config with its checkpoints and reports redirected to an empty temp dir, and a
/// `[stages.diagnostics]` table (so `diagnostics` can be fingerprinted whatever the config runs).
fn config(name: &str, tag: &str) -> (PipelineConfig, PathBuf) {
    let path = workspace().join("configs").join(name);
    let mut cfg = PipelineConfig::load(&path).unwrap();
    cfg.stages.diagnostics.get_or_insert_with(Default::default);
    let tmp = std::env::temp_dir().join(format!("squish-code-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    cfg.run.checkpoint_dir = tmp.join("checkpoints");
    cfg.run.report_dir = tmp.join("reports");
    (cfg, path)
}

/// `table` with one unit's hash altered, as if a source line of it had changed.
fn altered(table: &CodeTable, unit: &str) -> CodeTable {
    let mut t = table.clone();
    let mut hit = false;
    for c in t.crates.iter_mut().filter(|c| c.name == unit) {
        c.hash = format!("{}-edited", c.hash);
        hit = true;
    }
    let file = unit.strip_prefix("xtask/src/").unwrap_or(unit);
    for f in t.files.iter_mut().filter(|f| f.path == file) {
        f.hash = format!("{}-edited", f.hash);
        hit = true;
    }
    assert!(hit, "no unit `{unit}`");
    t
}

/// The stages of `ctx` (plus `diagnostics`, which every config can fingerprint) whose fingerprint
/// differs between the two tables.
fn changed(ctx: &Ctx, a: &CodeTable, b: &CodeTable) -> BTreeSet<String> {
    let mut names = ctx.cfg.order.clone();
    if !names.iter().any(|s| s == "diagnostics") {
        names.push("diagnostics".into());
    }
    names
        .into_iter()
        .filter(|s| {
            let fa = stages::fingerprint(ctx, s, a).unwrap();
            let fb = stages::fingerprint(ctx, s, b).unwrap();
            assert_eq!(fa.inputs, fb.inputs, "{s}: the code is not an input");
            fa.full != fb.full
        })
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The must-show of issue 15: changing a source line of squish-quant makes the next pipeline run
/// redo `int4_native` and the stages after it that run quant code, and nothing before it
/// (`diagnostics`, `baseline`). `kernels` and `final_report` follow once the rerun writes
/// different outputs (they hash those), see `a_rerun_with_new_outputs_reaches_kernels_and_final_report`.
#[test]
fn changing_squish_quant_redoes_int4_native_and_later_not_earlier() {
    let real = embedded();
    for name in ["smoke.toml", "phase7.toml", "phase7-60k.toml"] {
        let (cfg, path) = config(name, "quant");
        let ctx = Ctx {
            cfg: &cfg,
            config_path: &path,
        };
        assert_eq!(
            changed(&ctx, real, &altered(real, "squish-quant")),
            set(&["int4_native", "pruned", "mixed_precision"]),
            "{name}"
        );
    }
}

/// Which stages each code unit reruns (smoke config + diagnostics).
#[test]
fn each_code_unit_reruns_exactly_the_stages_that_run_it() {
    let real = embedded();
    let (cfg, path) = config("smoke.toml", "units");
    let ctx = Ctx {
        cfg: &cfg,
        config_path: &path,
    };
    let compress = ["int4_native", "pruned", "mixed_precision"];
    let cases: &[(&str, &[&str])] = &[
        (
            "squish-core",
            &[
                "baseline",
                "int4_native",
                "pruned",
                "mixed_precision",
                "kernels",
                "final_report",
            ],
        ),
        (
            "squish-kernels",
            &[
                "baseline",
                "int4_native",
                "pruned",
                "mixed_precision",
                "kernels",
            ],
        ),
        (
            "squish-hwdiag",
            &[
                "diagnostics",
                "baseline",
                "int4_native",
                "pruned",
                "mixed_precision",
                "kernels",
            ],
        ),
        ("squish-prune", &["pruned"]),
        ("squish-mixed", &["mixed_precision"]),
        ("xtask/src/stage_quant.rs", &compress),
        (
            "xtask/src/stage_data.rs",
            &[
                "baseline",
                "int4_native",
                "pruned",
                "mixed_precision",
                "final_report",
            ],
        ),
        ("xtask/src/stage_baseline.rs", &["baseline"]),
        ("xtask/src/cmd_diagnose.rs", &["diagnostics"]),
        ("xtask/src/stage_kernels.rs", &["kernels"]),
        ("xtask/src/svg.rs", &["final_report"]),
        ("xtask/src/pipeline/baseline.rs", &["baseline"]),
        // The runner decides what runs, not what a stage computes.
        ("xtask/src/pipeline/stages.rs", &[]),
        ("xtask/src/main.rs", &[]),
    ];
    for (unit, want) in cases {
        assert_eq!(
            changed(&ctx, real, &altered(real, unit)),
            set(want),
            "changing {unit}"
        );
    }
}

/// The downstream stages hash their inputs' outputs: when the rerun `int4_native` writes a
/// different checkpoint and report, `kernels` and `final_report` rerun too.
#[test]
fn a_rerun_with_new_outputs_reaches_kernels_and_final_report() {
    let real = embedded();
    let (cfg, path) = config("smoke.toml", "chain");
    let ctx = Ctx {
        cfg: &cfg,
        config_path: &path,
    };
    let write = |bytes: &[u8]| {
        let ckpt = ctx.checkpoint_path("int4_native");
        std::fs::create_dir_all(ckpt.parent().unwrap()).unwrap();
        std::fs::write(&ckpt, bytes).unwrap();
        let (json, _) = ctx.report_paths("int4_native");
        std::fs::create_dir_all(json.parent().unwrap()).unwrap();
        std::fs::write(&json, bytes).unwrap();
    };
    let fps = || -> Vec<String> {
        ["baseline", "kernels", "final_report"]
            .iter()
            .map(|s| stages::fingerprint(&ctx, s, real).unwrap().full)
            .collect()
    };
    write(b"int4 checkpoint built by the old squish-quant");
    let before = fps();
    write(b"int4 checkpoint built by the edited squish-quant");
    let after = fps();
    assert_eq!(before[0], after[0], "baseline does not read int4_native");
    assert_ne!(before[1], after[1], "kernels measures int4_native");
    assert_ne!(
        before[2], after[2],
        "final_report reads int4_native's report"
    );
    let _ = std::fs::remove_dir_all(cfg.run.checkpoint_dir.parent().unwrap());
}

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

/// A stamp written before a code change says "code changed: <unit>" on the next run; an old
/// stamp without code hashes is stale with a plain reason.
#[test]
fn the_rerun_reason_names_the_changed_code() {
    let real = embedded();
    let edited = altered(real, "squish-quant");
    let (cfg, path) = config("smoke.toml", "stamp");
    let ctx = Ctx {
        cfg: &cfg,
        config_path: &path,
    };
    let old = stages::fingerprint(&ctx, "int4_native", real).unwrap();
    write_stamp(&ctx, "int4_native", &old, &[]).unwrap();
    assert_eq!(status(&ctx, "int4_native", &old), Status::UpToDate);
    let new = stages::fingerprint(&ctx, "int4_native", &edited).unwrap();
    assert_eq!(
        status(&ctx, "int4_native", &new),
        Status::Stale("code changed: squish-quant".into())
    );
    // Settings and code both changed.
    let mut cfg2 = cfg.clone();
    cfg2.stages.int4_native.as_mut().unwrap().input = "pruned".into();
    let ctx2 = Ctx {
        cfg: &cfg2,
        config_path: &path,
    };
    let both = stages::fingerprint(&ctx2, "int4_native", &edited).unwrap();
    assert_eq!(
        status(&ctx2, "int4_native", &both),
        Status::Stale("inputs or settings changed; code changed: squish-quant".into())
    );
    // A stamp from before code hashes (no `inputs_fingerprint`, no `code`) still parses.
    let stamp_path = ctx.stamp_path("int4_native");
    let legacy = r#"{"stage": "int4_native", "fingerprint": "abc", "outputs": {}}"#;
    std::fs::write(&stamp_path, legacy).unwrap();
    let parsed: Stamp = serde_json::from_str(legacy).unwrap();
    assert!(parsed.code.is_empty() && parsed.inputs_fingerprint.is_none());
    assert_eq!(
        status(&ctx, "int4_native", &old),
        Status::Stale("inputs, settings or code changed (stamp without code hashes)".into())
    );
    let _ = std::fs::remove_dir_all(cfg.run.checkpoint_dir.parent().unwrap());
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
