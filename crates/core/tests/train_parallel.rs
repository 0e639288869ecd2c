//! Data-parallel training is deterministic: the smoke config's baseline (model and training
//! settings from `configs/smoke.toml`, a few steps, plus a distillation run with a teacher) gives
//! byte-identical checkpoints with a thread budget of 1 and of 2 — the micro-batch split is fixed
//! and the gradients are summed in micro-batch order, whatever runs where.

use std::collections::BTreeMap;

use squish_core::checkpoint::{self, Checkpoint, Provenance};
use squish_core::config::{ModelConfig, SsmMoeConfig};
use squish_core::data::Rng;
use squish_core::model::CpuBackend;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::threads::with_budget;
use squish_core::train::{TrainConfig, Trainable, train};

/// `[stages.baseline.model]` and `[stages.baseline.train]` of the smoke config.
fn smoke() -> (SsmMoeConfig, TrainConfig, u64) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/smoke.toml");
    let text = std::fs::read_to_string(path).expect("configs/smoke.toml");
    let doc: toml::Table = toml::from_str(&text).expect("smoke.toml parses");
    let base = &doc["stages"]["baseline"];
    let model: SsmMoeConfig = base["model"].clone().try_into().expect("model table");
    let train: TrainConfig = base["train"].clone().try_into().expect("train table");
    let seed = base["seed"].as_integer().expect("seed") as u64;
    (model, train, seed)
}

fn stream(vocab: usize, len: usize) -> Vec<u32> {
    let mut rng = Rng::new(5);
    (0..len).map(|_| rng.below(vocab) as u32).collect()
}

/// Checkpoint bytes after training with `threads` (and the validation log's nats).
fn train_bytes(threads: usize, distill: bool) -> (Vec<u8>, Vec<Option<f64>>) {
    let (c, mut tc, seed) = smoke();
    tc.steps = 4;
    tc.eval_every = 2;
    tc.eval_chunks = 2;
    if distill {
        tc.distill_alpha = 0.5;
    }
    assert_eq!(
        tc.micro_batches, 2,
        "the smoke config trains with the default split"
    );
    let data = stream(c.vocab_size, 20_000);
    let w = init_weights(&c, seed).unwrap();
    let device = CpuBackend::Flex.autodiff_device();
    let teacher_model = SsmMoe::from_weights(
        &c,
        &init_weights(&c, seed + 1).unwrap(),
        &CpuBackend::Flex.device(),
        ScanMode::Fused,
    )
    .unwrap();
    let teach = |b: &[Vec<u32>]| -> squish_core::Result<burn::tensor::Tensor<3>> {
        let (logits, _) = teacher_model.train_forward(b)?;
        Ok(burn::tensor::Tensor::from_data(logits.into_data(), &device))
    };
    let (model, log) = with_budget(threads, || {
        let m = SsmMoe::from_weights(&c, &w, &device, ScanMode::Fused).unwrap();
        train(
            m,
            &data,
            &data,
            1,
            &tc,
            distill.then_some(&teach as _),
            |_| {},
        )
        .unwrap()
    });
    let ck = Checkpoint {
        config: ModelConfig::SsmMoe(c),
        weights: model.to_weights().unwrap(),
        provenance: Provenance {
            stage: "test".into(),
            tool: "squish test".into(),
            ..Default::default()
        },
        metrics: BTreeMap::new(),
        tokenizer: None,
    };
    let nats = log.iter().map(|p| p.valid_nats).collect();
    (checkpoint::to_bytes(&ck).unwrap(), nats)
}

#[test]
fn smoke_baseline_checkpoint_bytes_do_not_depend_on_threads() {
    let (one, nats_one) = train_bytes(1, false);
    let (two, nats_two) = train_bytes(2, false);
    assert_eq!(nats_one, nats_two);
    assert!(
        one == two,
        "checkpoint bytes differ between 1 and 2 threads"
    );
}

#[test]
fn distillation_checkpoint_bytes_do_not_depend_on_threads() {
    let (one, _) = train_bytes(1, true);
    let (two, _) = train_bytes(2, true);
    assert!(
        one == two,
        "checkpoint bytes differ between 1 and 2 threads (distillation)"
    );
    let (plain, _) = train_bytes(1, false);
    assert!(plain != one, "the teacher term changed nothing");
}
