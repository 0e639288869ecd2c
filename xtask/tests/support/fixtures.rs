#![allow(dead_code)] // shared by several test crates, each using a part
//! Input files for the CLI tests, written once per test binary into a temp directory: a tiny
//! SsmMoe checkpoint (F32 and RTN INT4) with a BPE tokenizer trained on generated stories, the
//! stories260K import (Llama family, needs ../shared/data), and damaged files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use squish_core::checkpoint::{self, Checkpoint, Provenance};
use squish_core::config::{ModelConfig, SsmMoeConfig};
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::quant::QBits;
use squish_core::tokenizer::train_bpe;

/// `cargo xtask` (the built binary) run from the repository root.
pub fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

/// The smoke config with its checkpoints and reports inside `d`.
pub fn smoke_config_in(d: &Path) -> PathBuf {
    std::fs::create_dir_all(d).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("configs/smoke.toml")).unwrap();
    let cfg = text
        .replace(
            "checkpoint_dir = \"checkpoints/smoke\"",
            &format!("checkpoint_dir = \"{}\"", d.join("ck").display()),
        )
        .replace(
            "report_dir = \"reports\"",
            &format!("report_dir = \"{}\"", d.join("rep").display()),
        );
    assert!(
        cfg.contains(&d.display().to_string()),
        "smoke.toml layout changed"
    );
    let p = d.join("smoke.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

/// Runs `xtask args…`.
pub fn run(args: &[String]) -> Output {
    xtask().args(args).output().expect("xtask runs")
}

/// The fixture files (see the module docs).
pub struct Fixtures {
    /// The temp directory holding everything.
    pub dir: PathBuf,
    /// Tiny SsmMoe, F32, with its tokenizer beside it.
    pub ssm: PathBuf,
    /// The same model RTN INT4 (a quantized input).
    pub ssm_q4: PathBuf,
    /// stories260K imported (Llama family), when ../shared/data is there.
    pub llama: Option<PathBuf>,
    /// A path that does not exist.
    pub missing: PathBuf,
    /// A directory.
    pub a_dir: PathBuf,
    /// An empty file.
    pub empty: PathBuf,
    /// 4 KiB of pseudo-random bytes.
    pub random: PathBuf,
    /// A text file (valid UTF-8 stories) for `--data` / `--calib`.
    pub text: PathBuf,
    /// An output path whose parent is a regular file (cannot be created, even by root).
    pub unwritable_out: PathBuf,
}

/// The tiny SsmMoe's config.
pub fn tiny_ssm_config() -> SsmMoeConfig {
    SsmMoeConfig {
        d_model: 16,
        n_layers: 1,
        vocab_size: 300,
        seq_len: 32,
        d_inner: 32,
        d_state: 4,
        d_conv: 4,
        dt_rank: 2,
        n_experts: 2,
        top_k: 1,
        expert_hidden: 16,
        norm_eps: 1e-5,
    }
}

/// Writes a tiny SsmMoe checkpoint (`quantized`: RTN INT4) with `tokenizer` to `path`.
pub fn write_ssm(path: &Path, tokenizer: &[u8], quantized: bool) {
    let c = tiny_ssm_config();
    let mut weights = init_weights(&c, 3).unwrap();
    if quantized {
        weights = squish_kernels::runtime::rtn_quantize(&weights, QBits::Int4, 16).unwrap();
    }
    let tref = checkpoint::write_tokenizer(tokenizer, "llama2c", path).unwrap();
    let ckpt = Checkpoint {
        config: ModelConfig::SsmMoe(c),
        weights,
        provenance: Provenance {
            stage: "test".into(),
            tool: "cli test".into(),
            ..Provenance::default()
        },
        metrics: BTreeMap::new(),
        tokenizer: Some(tref),
    };
    checkpoint::save(&ckpt, path).unwrap();
}

/// A 300-piece BPE trained on `n` generated stories.
pub fn trained_tokenizer(n: usize, seed: u64) -> Vec<u8> {
    let text = squish_core::data::synth::corpus(n, seed);
    train_bpe(&text, 300).unwrap().to_bytes()
}

/// The fixtures, built on first use.
pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("squish-cli-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a_dir")).unwrap();
        let tok = trained_tokenizer(400, 1);
        let ssm = dir.join("ssm/f32.safetensors");
        write_ssm(&ssm, &tok, false);
        let ssm_q4 = dir.join("ssm/q4.safetensors");
        write_ssm(&ssm_q4, &tok, true);
        let empty = dir.join("empty.safetensors");
        std::fs::write(&empty, b"").unwrap();
        let random = dir.join("random.safetensors");
        let mut rng = squish_core::data::Rng::new(9);
        let bytes: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
        std::fs::write(&random, bytes).unwrap();
        let text = dir.join("stories.txt");
        std::fs::write(&text, squish_core::data::synth::corpus(200, 2)).unwrap();
        std::fs::write(dir.join("a_file"), b"x").unwrap();
        let llama = squish_core::shared::require_for_test("models/stories260K/stories260K.bin")
            .map(|model| {
                let out = dir.join("llama/f32.safetensors");
                let o = run(&[
                    "import-llama2c".into(),
                    "--model".into(),
                    model.display().to_string(),
                    "--tokenizer".into(),
                    model.with_file_name("tok512.bin").display().to_string(),
                    "--out".into(),
                    out.display().to_string(),
                ]);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                out
            });
        Fixtures {
            missing: dir.join("missing.safetensors"),
            a_dir: dir.join("a_dir"),
            unwritable_out: dir.join("a_file/out.safetensors"),
            dir,
            ssm,
            ssm_q4,
            llama,
            empty,
            random,
            text,
        }
    })
}
