//! Fingerprints include the code: which stages a code change reruns, and why (issue 15). The
//! hashes themselves are tested in `code_hash_tests.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::code::{CodeTable, embedded};
use super::{Ctx, PipelineConfig, Stamp, Status, stages, status, write_stamp};

pub(super) fn workspace() -> PathBuf {
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
