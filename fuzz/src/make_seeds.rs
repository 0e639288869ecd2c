//! Writes the seed corpora of the fuzz targets (see `make_seeds.sh` and README.md).
//!
//! Usage: `make_seeds <shared data dir> <repo configs dir> <corpus dir>`. Seeds are small on
//! purpose (libFuzzer's speed falls with input size): tiny checkpoints of both families in every
//! storage format, a tiny llama2.c v0 model with the real `tok512.bin`, the real `tok512.bin`
//! and a BPE trained on the real TinyStories text, and the repository's pipeline configs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::f16;
use squish_core::checkpoint::{self, Checkpoint, Provenance, TensorData, WeightTensor, Weights};
use squish_core::config::{LlamaConfig, ModelConfig, SsmMoeConfig};
use squish_core::model::ssm_moe_weights;
use squish_core::quant::{QBits, QTensor};
use squish_core::tokenizer::train::train_bpe;
use squish_core::{data::Rng, llama2c};
use squish_kernels::runtime::rtn_quantize;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// A llama2.c v0 file: 7 × i32 header, then `expected_floats` deterministic floats.
fn llama2c_bytes(h: [i32; 7], seed: u64) -> Res<Vec<u8>> {
    let mut out: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
    let (_, n) = llama2c::parse_header(&out, Path::new("seed"))?;
    let mut rng = Rng::new(seed);
    for _ in 0..n {
        out.extend_from_slice(&((rng.f32() - 0.5) * 0.2).to_le_bytes());
    }
    Ok(out)
}

fn ckpt(config: ModelConfig, weights: Weights) -> Checkpoint {
    Checkpoint {
        config,
        weights,
        provenance: Provenance {
            stage: "seed".into(),
            tool: "squish-fuzz".into(),
            ..Provenance::default()
        },
        metrics: BTreeMap::from([("parameters".into(), 1.0)]),
        tokenizer: None,
    }
}

/// `w` with `name` re-stored as asymmetric INT4 (group `g`) and `f16_name` as F16.
fn mixed_formats(mut w: Weights, name: &str, g: usize, f16_name: &str) -> Res<Weights> {
    let t = w.get(name)?.clone();
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let ng = cols.div_ceil(g);
    let levels: Vec<i32> = (0..rows * cols).map(|i| (i % 16) as i32).collect();
    let scales = vec![f16::from_f32(0.01); rows * ng];
    let zeros = Some(vec![8u8; rows * ng]);
    let q = QTensor::from_levels(QBits::Int4, rows, cols, g, &levels, scales, zeros)?;
    w.insert(
        name,
        WeightTensor {
            shape: vec![rows, cols],
            data: TensorData::Quant(q),
        },
    );
    let t = w.get(f16_name)?.clone();
    let v = t.to_f32().iter().map(|&x| f16::from_f32(x)).collect();
    w.insert(
        f16_name,
        WeightTensor {
            shape: t.shape,
            data: TensorData::F16(v),
        },
    );
    Ok(w)
}

fn main() -> Res<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [shared, configs, corpus] = &args[..] else {
        return Err("usage: make_seeds <shared data dir> <configs dir> <corpus dir>".into());
    };
    let tok512 = std::fs::read(shared.join("models/stories260K/tok512.bin"))?;
    let valid = std::fs::read_to_string(shared.join("tinystories/valid.txt"))?;

    // Checkpoints (checkpoint_load and runtime_step share them).
    let mut ckpts = Vec::new();
    for (name, h) in [
        ("llama_shared", [16, 24, 1, 2, 1, 32, 8]),
        ("llama_separate", [8, 12, 2, 2, 2, -16, 4]),
    ] {
        let (cfg, w) = llama2c::import_bytes(&llama2c_bytes(h, 1)?, Path::new(name))?;
        ckpts.push((
            format!("{name}_f32"),
            ckpt(ModelConfig::Llama(cfg.clone()), w.clone()),
        ));
        let w = mixed_formats(
            w,
            "layers.0.attention.wq.weight",
            8,
            "layers.0.attention.wo.weight",
        )?;
        let w = rtn_quantize(&w, QBits::Int8, 8)?;
        ckpts.push((format!("{name}_mixed"), ckpt(ModelConfig::Llama(cfg), w)));
    }
    let ssm = SsmMoeConfig {
        d_model: 8,
        n_layers: 1,
        vocab_size: 16,
        seq_len: 8,
        d_inner: 16,
        d_state: 4,
        d_conv: 2,
        dt_rank: 2,
        n_experts: 2,
        top_k: 1,
        expert_hidden: 8,
        norm_eps: 1e-5,
    };
    let w = ssm_moe_weights::init_weights(&ssm, 7)?;
    ckpts.push((
        "ssm_moe_f32".into(),
        ckpt(ModelConfig::SsmMoe(ssm.clone()), w.clone()),
    ));
    let q = rtn_quantize(&w, QBits::Int4, 4)?;
    ckpts.push(("ssm_moe_q4".into(), ckpt(ModelConfig::SsmMoe(ssm), q)));
    for (name, c) in &ckpts {
        let bytes = checkpoint::to_bytes(c)?;
        for target in ["checkpoint_load", "runtime_step"] {
            write(&corpus.join(target), &format!("{name}.safetensors"), &bytes)?;
        }
    }

    // llama2.c import: a tiny v0 model with the real tokenizer's vocabulary (512) + tok512.bin.
    let model = llama2c_bytes([8, 16, 1, 2, 2, 512, 4], 2)?;
    let mut input = (model.len() as u32).to_le_bytes().to_vec();
    input.extend_from_slice(&model);
    input.extend_from_slice(&tok512);
    write(&corpus.join("llama2c_import"), "tiny_tok512.bin", &input)?;

    // tokenizer.bin: the real tok512.bin, and a 300-piece BPE trained on real TinyStories text.
    let dir = corpus.join("tokenizer_bin");
    let mut input = 512u16.to_le_bytes().to_vec();
    input.extend_from_slice(&tok512);
    write(&dir, "tok512.bin", &input)?;
    let cut = valid.floor_char_boundary(200_000.min(valid.len()));
    let bpe = train_bpe(&valid[..cut], 300)?;
    let mut input = 300u16.to_le_bytes().to_vec();
    input.extend_from_slice(&bpe.to_bytes());
    write(&dir, "bpe300.bin", &input)?;

    // Pipeline TOML: the repository's configs, and each model family's config as a table.
    let dir = corpus.join("config_toml");
    for e in std::fs::read_dir(configs)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            write(&dir, &name, &std::fs::read(&p)?)?;
        }
    }
    let llama = LlamaConfig {
        dim: 64,
        hidden_dim: 172,
        n_layers: 5,
        n_heads: 8,
        n_kv_heads: 4,
        vocab_size: 512,
        seq_len: 512,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    write(
        &dir,
        "model_llama.toml",
        toml::to_string(&ModelConfig::Llama(llama))?.as_bytes(),
    )?;
    let ssm = &ckpts.last().ok_or("no checkpoint")?.1.config;
    write(&dir, "model_ssm_moe.toml", toml::to_string(ssm)?.as_bytes())?;
    println!("seeds written to {}", corpus.display());
    Ok(())
}
