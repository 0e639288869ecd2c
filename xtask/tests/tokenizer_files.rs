//! Two checkpoints with different tokenizers in one directory keep their own tokenizer files
//! (content-named `tokenizer-<sha8>.bin`) and both stay usable; a checkpoint written before
//! content naming (its metadata names `tokenizer.bin`) still reads.

#[path = "support/fixtures.rs"]
mod fixtures;

use fixtures::{run, trained_tokenizer, write_ssm};

fn ok(args: &[&str]) -> String {
    let o = run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert!(
        o.status.success(),
        "xtask {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn two_tokenizers_in_one_directory_are_both_kept() {
    let dir = std::env::temp_dir().join(format!("squish-tokfiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (tok_a, tok_b) = (trained_tokenizer(300, 1), trained_tokenizer(300, 2));
    assert_ne!(tok_a, tok_b);
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    write_ssm(&a, &tok_a, false);
    write_ssm(&b, &tok_b, false);
    // Commands that write a checkpoint beside another one with a different tokenizer.
    let (qa, pb) = (
        dir.join("a_q4.safetensors"),
        dir.join("b_pruned.safetensors"),
    );
    ok(&[
        "quantize",
        "--checkpoint",
        a.to_str().unwrap(),
        "--out",
        qa.to_str().unwrap(),
    ]);
    ok(&[
        "prune",
        "--checkpoint",
        b.to_str().unwrap(),
        "--out",
        pb.to_str().unwrap(),
        "--ratio",
        "0.25",
    ]);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tokenizer"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    for ck in [&a, &b, &qa, &pb] {
        let out = ok(&[
            "generate",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--steps",
            "8",
            "--temperature",
            "0",
        ]);
        assert!(!out.is_empty());
        ok(&["inspect", "--checkpoint", ck.to_str().unwrap()]);
    }
    // The old layout: metadata naming `tokenizer.bin` in the directory still reads.
    let mut legacy = squish_core::checkpoint::load(&a).unwrap();
    let old = dir.join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("tokenizer.bin"), &tok_a).unwrap();
    legacy.tokenizer.as_mut().unwrap().file = "tokenizer.bin".into();
    squish_core::checkpoint::save(&legacy, &old.join("m.safetensors")).unwrap();
    ok(&[
        "generate",
        "--checkpoint",
        old.join("m.safetensors").to_str().unwrap(),
        "--steps",
        "4",
        "--temperature",
        "0",
    ]);
    std::fs::remove_dir_all(dir).unwrap();
}
