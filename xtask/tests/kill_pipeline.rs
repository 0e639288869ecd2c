//! Fault injection: the smoke pipeline is killed with SIGKILL at 13 points spread over its stages
//! (early, middle and late in each stage — late points land in the checkpoint or report writes
//! that end a stage) and rerun after each kill; the run that finally completes must leave every
//! checkpoint and tokenizer file byte-identical to an uninterrupted run's, and after every kill
//! each stage stamp on disk must describe intact outputs (no partial file is ever taken as done).
//! At least 10 kills must land while the pipeline runs (a point in a stage that ended first may not).
//!
//! Takes 2–4 minutes, so it is `#[ignore]`d in `cargo test` and run by its own step in `.ci/run`:
//! `cargo test --release --workspace --test kill_pipeline -- --ignored`.

#[path = "support/fixtures.rs"]
mod fixtures;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fixtures::{smoke_config_in, xtask};

/// Runs the pipeline; with `kill_at = Some((stage, delay))`, SIGKILLs it `delay` after
/// `[stage] running` is printed. Returns (stdout lines, whether it was killed while running).
fn pipeline(cfg: &Path, kill_at: Option<(&str, Duration)>) -> (Vec<String>, bool) {
    let mut child = xtask()
        .args(["pipeline", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut killed = false;
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        let line = line.unwrap();
        let hit = kill_at.is_some_and(|(s, _)| line.contains(&format!("[{s}] running")));
        lines.push(line);
        if hit {
            std::thread::sleep(kill_at.unwrap().1);
            killed = child.try_wait().unwrap().is_none();
            child.kill().unwrap(); // SIGKILL on Unix
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed || status.success(),
        "pipeline failed:\n{}",
        lines.join("\n")
    );
    (lines, killed)
}

/// Every file under `dir` except stamps and temp files, relative path → bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name != "stage.json" && !name.ends_with(".tmp") {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Every stage stamp under `ck` lists outputs that exist with the recorded sha256.
fn stamps_describe_intact_outputs(ck: &Path, when: &str) {
    let Ok(entries) = std::fs::read_dir(ck) else {
        return;
    };
    for e in entries {
        let stamp = e.unwrap().path().join("stage.json");
        let Ok(text) = std::fs::read_to_string(&stamp) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{when}: torn stamp {}: {e}", stamp.display()));
        for (out, sha) in v["outputs"].as_object().unwrap() {
            assert!(!out.ends_with(".tmp"), "{when}: {out}");
            let got = squish_core::fsutil::sha256_file(Path::new(out))
                .unwrap_or_else(|e| panic!("{when}: stamped output missing: {e}"));
            assert_eq!(
                &got,
                sha.as_str().unwrap(),
                "{when}: stamped output {out} differs"
            );
        }
    }
}

#[test]
#[ignore = "2–4 minutes: run by .ci/run (cargo test --release --workspace --test kill_pipeline -- --ignored)"]
fn smoke_pipeline_survives_sigkill_anywhere() {
    let root = std::env::temp_dir().join(format!("squish-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    // The uninterrupted reference run, and each stage's duration in it.
    let (a, b) = (root.join("a"), root.join("b"));
    let (lines, _) = pipeline(&smoke_config_in(&a), None);
    let mut secs = BTreeMap::new();
    for l in &lines {
        if let (Some(s), Some(t)) = (l.split_once("] done in "), l.find('[')) {
            let stage = s.0[t + 1..].to_string();
            let d: f64 = s.1.split(' ').next().unwrap().parse().unwrap();
            secs.insert(stage, d);
        }
    }
    assert!(secs.len() >= 6, "{lines:?}");
    let reference = files(&a.join("ck"));

    // Kill points: (stage, fraction of its reference duration after `[stage] running`).
    // The short late stages may end before their point: more points than the 10 required.
    let points = [
        ("baseline", 0.05),
        ("baseline", 0.35),
        ("baseline", 0.7),
        ("baseline", 0.97),
        ("int4_native", 0.3),
        ("int4_native", 0.9),
        ("pruned", 0.3),
        ("pruned", 0.9),
        ("mixed_precision", 0.2),
        ("mixed_precision", 0.6),
        ("mixed_precision", 0.9),
        ("kernels", 0.3),
        ("final_report", 0.2),
    ];
    let cfg = smoke_config_in(&b);
    let t0 = Instant::now();
    let mut kills = Vec::new();
    for (stage, frac) in points {
        let delay = Duration::from_secs_f64(secs[stage] * frac);
        let (_, killed) = pipeline(&cfg, Some((stage, delay)));
        if killed {
            kills.push(format!("{stage}+{:.2}s", delay.as_secs_f64()));
        }
        stamps_describe_intact_outputs(&b.join("ck"), &format!("after a kill in {stage}"));
    }
    let (last, _) = pipeline(&cfg, None);
    assert!(
        last.iter().any(|l| l.contains("[final_report]")),
        "{last:?}"
    );
    println!(
        "{} kills ({}) and the final run in {:.0} s",
        kills.len(),
        kills.join(", "),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        kills.len() >= 10,
        "only {} kills landed: {kills:?}",
        kills.len()
    );
    let resumed = files(&b.join("ck"));
    assert_eq!(
        resumed.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "the resumed run left other files"
    );
    for (name, bytes) in &reference {
        assert!(
            resumed[name] == *bytes,
            "{name} differs from the uninterrupted run's"
        );
    }
    // Nothing left to do: a further run skips every stage.
    let (again, _) = pipeline(&cfg, None);
    assert!(!again.iter().any(|l| l.contains("running")), "{again:?}");
    std::fs::remove_dir_all(root).unwrap();
}
