//! Every subcommand × bad inputs: a missing file, a directory, an empty file, random bytes, a
//! file of another kind, a quantized input where F32 is required, an output that cannot be
//! created, and out-of-range numbers. Each must exit non-zero with one `error:` line that names
//! the file or the flag — never a panic, never a hang (each command is killed after 60 s).

#[path = "support/fixtures.rs"]
mod fixtures;

use std::time::{Duration, Instant};

use fixtures::{Fixtures, fixtures, xtask};

/// One row: a label, the arguments (placeholders below) and what the error line must name (the
/// file, or the flag: a setting named as the commands' own checks spell it, e.g. `ratio`).
/// Placeholders: `{ssm}` tiny SsmMoe F32, `{q4}` its INT4 copy, `{llama}` stories260K import,
/// `{missing}`, `{dir}`, `{empty}`, `{random}`, `{text}` stories, `{unw}` an uncreatable output,
/// `{out}` a fresh output path, `{model}` / `{tok}` the real llama2.c model and tokenizer.
const TABLE: &[(&str, &str, &str)] = &[
    // import-llama2c
    (
        "import: missing model",
        "import-llama2c --model {missing} --tokenizer {tok} --out {out}",
        "{missing}",
    ),
    (
        "import: model is a dir",
        "import-llama2c --model {dir} --tokenizer {tok} --out {out}",
        "{dir}",
    ),
    (
        "import: empty model",
        "import-llama2c --model {empty} --tokenizer {tok} --out {out}",
        "{empty}",
    ),
    (
        "import: random model",
        "import-llama2c --model {random} --tokenizer {tok} --out {out}",
        "{random}",
    ),
    (
        "import: squish checkpoint as model",
        "import-llama2c --model {ssm} --tokenizer {tok} --out {out}",
        "{ssm}",
    ),
    (
        "import: missing tokenizer",
        "import-llama2c --model {model} --tokenizer {missing} --out {out}",
        "{missing}",
    ),
    (
        "import: empty tokenizer",
        "import-llama2c --model {model} --tokenizer {empty} --out {out}",
        "{empty}",
    ),
    (
        "import: random tokenizer",
        "import-llama2c --model {model} --tokenizer {random} --out {out}",
        "{random}",
    ),
    (
        "import: checkpoint as tokenizer",
        "import-llama2c --model {model} --tokenizer {ssm} --out {out}",
        "{ssm}",
    ),
    (
        "import: unwritable out",
        "import-llama2c --model {model} --tokenizer {tok} --out {unw}",
        "{unw}",
    ),
    // eval
    (
        "eval: missing",
        "eval --checkpoint {missing} --data {text}",
        "{missing}",
    ),
    (
        "eval: dir",
        "eval --checkpoint {dir} --data {text}",
        "{dir}",
    ),
    (
        "eval: empty",
        "eval --checkpoint {empty} --data {text}",
        "{empty}",
    ),
    (
        "eval: random",
        "eval --checkpoint {random} --data {text}",
        "{random}",
    ),
    (
        "eval: llama2.c file as checkpoint",
        "eval --checkpoint {model} --data {text}",
        "{model}",
    ),
    (
        "eval: missing data",
        "eval --checkpoint {ssm} --data {missing}",
        "{missing}",
    ),
    (
        "eval: data is a dir",
        "eval --checkpoint {ssm} --data {dir}",
        "{dir}",
    ),
    (
        "eval: data is binary",
        "eval --checkpoint {ssm} --data {random}",
        "{random}",
    ),
    (
        "eval: batch 0",
        "eval --checkpoint {ssm} --data {text} --batch 0",
        "--batch",
    ),
    (
        "eval: ctx 0",
        "eval --checkpoint {ssm} --data {text} --ctx 0",
        "--ctx",
    ),
    (
        "eval: ctx 1",
        "eval --checkpoint {ssm} --data {text} --ctx 1",
        "ctx",
    ),
    (
        "eval: unwritable --write-text",
        "eval --checkpoint {ssm} --data {text} --write-text {unw}",
        "{unw}",
    ),
    // generate
    (
        "generate: missing",
        "generate --checkpoint {missing}",
        "{missing}",
    ),
    ("generate: dir", "generate --checkpoint {dir}", "{dir}"),
    (
        "generate: empty",
        "generate --checkpoint {empty}",
        "{empty}",
    ),
    (
        "generate: random",
        "generate --checkpoint {random}",
        "{random}",
    ),
    (
        "generate: temperature NaN",
        "generate --checkpoint {ssm} --temperature NaN",
        "--temperature",
    ),
    (
        "generate: temperature -1",
        "generate --checkpoint {ssm} --temperature=-1",
        "--temperature",
    ),
    (
        "generate: topp 2",
        "generate --checkpoint {ssm} --topp 2",
        "--topp",
    ),
    (
        "generate: topp NaN",
        "generate --checkpoint {ssm} --topp NaN",
        "--topp",
    ),
    (
        "generate: llama2.c file as checkpoint",
        "generate --checkpoint {model}",
        "{model}",
    ),
    // inspect
    (
        "inspect: missing",
        "inspect --checkpoint {missing}",
        "{missing}",
    ),
    ("inspect: dir", "inspect --checkpoint {dir}", "{dir}"),
    ("inspect: empty", "inspect --checkpoint {empty}", "{empty}"),
    (
        "inspect: random",
        "inspect --checkpoint {random}",
        "{random}",
    ),
    // quantize
    (
        "quantize: missing",
        "quantize --checkpoint {missing} --out {out}",
        "{missing}",
    ),
    (
        "quantize: dir",
        "quantize --checkpoint {dir} --out {out}",
        "{dir}",
    ),
    (
        "quantize: empty",
        "quantize --checkpoint {empty} --out {out}",
        "{empty}",
    ),
    (
        "quantize: random",
        "quantize --checkpoint {random} --out {out}",
        "{random}",
    ),
    (
        "quantize: quantized input",
        "quantize --checkpoint {q4} --out {out}",
        "{q4}",
    ),
    (
        "quantize: bits 3",
        "quantize --checkpoint {ssm} --out {out} --bits 3",
        "bits",
    ),
    (
        "quantize: group 0",
        "quantize --checkpoint {ssm} --out {out} --group 0",
        "--group",
    ),
    (
        "quantize: unwritable out",
        "quantize --checkpoint {ssm} --out {unw}",
        "{unw}",
    ),
    (
        "quantize: missing calib",
        "quantize --checkpoint {ssm} --out {out} --method gptq --calib {missing}",
        "{missing}",
    ),
    // prune
    (
        "prune: missing",
        "prune --checkpoint {missing} --out {out}",
        "{missing}",
    ),
    (
        "prune: dir",
        "prune --checkpoint {dir} --out {out}",
        "{dir}",
    ),
    (
        "prune: empty",
        "prune --checkpoint {empty} --out {out}",
        "{empty}",
    ),
    (
        "prune: random",
        "prune --checkpoint {random} --out {out}",
        "{random}",
    ),
    (
        "prune: quantized input",
        "prune --checkpoint {q4} --out {out}",
        "{q4}",
    ),
    (
        "prune: ratio 1.5",
        "prune --checkpoint {ssm} --out {out} --ratio 1.5",
        "ratio",
    ),
    (
        "prune: ratio -0.1",
        "prune --checkpoint {ssm} --out {out} --ratio=-0.1",
        "ratio",
    ),
    (
        "prune: unwritable out",
        "prune --checkpoint {ssm} --out {unw}",
        "{unw}",
    ),
    // prune-frontier
    (
        "prune-frontier: missing",
        "prune-frontier --checkpoint {missing} --out-dir {out} --token-curve",
        "{missing}",
    ),
    (
        "prune-frontier: quantized input",
        "prune-frontier --checkpoint {q4} --out-dir {out} --token-curve",
        "{q4}",
    ),
    (
        "prune-frontier: unknown method",
        "prune-frontier --checkpoint {ssm} --out-dir {out} --methods magic",
        "methods",
    ),
    (
        "prune-frontier: ratio 1.5",
        "prune-frontier --checkpoint {ssm} --out-dir {out} --ratios 1.5 --token-curve",
        "ratio",
    ),
    (
        "prune-frontier: unwritable out",
        "prune-frontier --checkpoint {ssm} --out-dir {unw} --token-curve",
        "{unw}",
    ),
    // mixed
    (
        "mixed: missing",
        "mixed --checkpoint {missing} --out {out} --budget-bpp 6",
        "{missing}",
    ),
    (
        "mixed: dir",
        "mixed --checkpoint {dir} --out {out} --budget-bpp 6",
        "{dir}",
    ),
    (
        "mixed: empty",
        "mixed --checkpoint {empty} --out {out} --budget-bpp 6",
        "{empty}",
    ),
    (
        "mixed: random",
        "mixed --checkpoint {random} --out {out} --budget-bpp 6",
        "{random}",
    ),
    (
        "mixed: quantized input",
        "mixed --checkpoint {q4} --out {out} --budget-bpp 6",
        "{q4}",
    ),
    (
        "mixed: budget 0 bytes",
        "mixed --checkpoint {ssm} --out {out} --budget-bytes 0",
        "budget",
    ),
    (
        "mixed: budget NaN bpp",
        "mixed --checkpoint {ssm} --out {out} --budget-bpp NaN",
        "budget",
    ),
    (
        "mixed: unwritable out",
        "mixed --checkpoint {ssm} --out {unw} --budget-bpp 6",
        "{unw}",
    ),
    // bench
    (
        "bench: missing",
        "bench --checkpoint {missing}",
        "{missing}",
    ),
    ("bench: dir", "bench --checkpoint {dir}", "{dir}"),
    ("bench: empty", "bench --checkpoint {empty}", "{empty}"),
    ("bench: random", "bench --checkpoint {random}", "{random}"),
    (
        "bench: reps 0",
        "bench --checkpoint {ssm} --reps 0",
        "--reps",
    ),
    (
        "bench: threads 0",
        "bench --checkpoint {ssm} --threads 0",
        "--threads",
    ),
    // bench-train, pipeline: config files
    (
        "bench-train: missing config",
        "bench-train --config {missing}",
        "{missing}",
    ),
    (
        "bench-train: config is a dir",
        "bench-train --config {dir}",
        "{dir}",
    ),
    (
        "bench-train: binary config",
        "bench-train --config {random}",
        "{random}",
    ),
    ("bench-train: steps 0", "bench-train --steps 0", "steps"),
    (
        "pipeline: missing config",
        "pipeline --config {missing} --dry-run",
        "{missing}",
    ),
    (
        "pipeline: config is a dir",
        "pipeline --config {dir} --dry-run",
        "{dir}",
    ),
    (
        "pipeline: empty config",
        "pipeline --config {empty} --dry-run",
        "{empty}",
    ),
    (
        "pipeline: binary config",
        "pipeline --config {random} --dry-run",
        "{random}",
    ),
    (
        "pipeline: unknown --only stage",
        "pipeline --config configs/smoke.toml --dry-run --only nope",
        "nope",
    ),
    // diagnose
    (
        "diagnose: unknown --simd",
        "diagnose --quick --simd avx9000",
        "SIMD",
    ),
];

fn expand(s: &str, f: &Fixtures, case: usize) -> Option<String> {
    let shared = |rel: &str| squish_core::shared::shared_file(rel).map(|p| p.display().to_string());
    let mut s = s.to_string();
    let d = |p: &std::path::Path| p.display().to_string();
    let subs: Vec<(&str, Option<String>)> = vec![
        ("{ssm}", Some(d(&f.ssm))),
        ("{q4}", Some(d(&f.ssm_q4))),
        ("{llama}", f.llama.as_deref().map(d)),
        ("{missing}", Some(d(&f.missing))),
        ("{dir}", Some(d(&f.a_dir))),
        ("{empty}", Some(d(&f.empty))),
        ("{random}", Some(d(&f.random))),
        ("{text}", Some(d(&f.text))),
        ("{unw}", Some(d(&f.unwritable_out))),
        (
            "{out}",
            Some(d(&f.dir.join(format!("out/{case}/o.safetensors")))),
        ),
        ("{model}", shared("models/stories260K/stories260K.bin")),
        ("{tok}", shared("models/stories260K/tok512.bin")),
    ];
    for (k, v) in subs {
        if s.contains(k) {
            s = s.replace(k, &v?); // a row needing ../shared/data is skipped without it
        }
    }
    Some(s)
}

#[test]
fn every_subcommand_rejects_bad_input_with_one_clear_line() {
    let f = fixtures();
    let t0 = Instant::now();
    let mut failures = Vec::new();
    let mut ran = 0;
    for (case, (label, args, needle)) in TABLE.iter().enumerate() {
        let (Some(args), Some(needle)) = (expand(args, f, case), expand(needle, f, case)) else {
            assert!(
                !squish_core::shared::in_ci(),
                "{label}: CI must provide ../shared/data"
            );
            continue;
        };
        let argv: Vec<&str> = args.split(' ').collect();
        let mut child = xtask()
            .args(&argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if start.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        ran += 1;
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        let problem = match status {
            None => Some("hung (killed after 60 s)".to_string()),
            Some(s) if s.success() => Some("exited 0".into()),
            Some(_) if stderr.contains("panicked") => Some("panicked".into()),
            Some(_) if errors.len() != 1 => Some(format!("{} error lines", errors.len())),
            Some(_) if !errors[0].contains(&needle) => Some(format!("does not name `{needle}`")),
            Some(_) => None,
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{label}: {p}\n    xtask {args}\n    stderr: {}",
                stderr.trim()
            ));
        }
    }
    println!(
        "{ran} bad-input cases in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
