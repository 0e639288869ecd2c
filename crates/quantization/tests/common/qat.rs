//! QAT fixtures: a tiny SsmMoe, a learnable token stream, a few-step QAT configuration, and the
//! check that an exported checkpoint computes its fake-quant network's logits.

use burn::module::Module;
use squish_core::checkpoint::Checkpoint;
use squish_core::config::{ModelConfig, SsmMoeConfig};
use squish_core::data::Rng;
use squish_core::model::llama::Llama;
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::ssm_moe_weights::init_weights;
use squish_core::model::{CpuBackend, tensor_to_vec};
use squish_core::train::{Trainable, train};
use squish_quant::qat::qat_net;
use squish_quant::qat_export::export;
use squish_quant::{
    QatConfig, QatInit, QatScales, QatSummary, QuantFormat, QuantReport, SmallFormat,
};

use super::ckpt;

/// A tiny random SsmMoe (d_model 16, one layer, two experts, top-1, vocab 40).
pub fn tiny_ssm_moe() -> Checkpoint {
    let c = SsmMoeConfig {
        d_model: 16,
        n_layers: 1,
        vocab_size: 40,
        seq_len: 32,
        d_inner: 24,
        d_state: 4,
        d_conv: 4,
        dt_rank: 4,
        n_experts: 2,
        top_k: 1,
        expert_hidden: 20,
        norm_eps: 1e-5,
    };
    let w = init_weights(&c, 5).unwrap();
    ckpt(ModelConfig::SsmMoe(c), w)
}

/// A learnable token stream of `n` tokens over vocab 40 (mostly `+1 mod 40`).
pub fn stream(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    // A learnable pattern (mostly +1 mod vocab) so a few steps reduce the loss.
    let mut v = vec![1u32];
    for _ in 1..n {
        let last = *v.last().unwrap();
        v.push(if rng.f32() < 0.8 {
            (last + 1) % 40
        } else {
            rng.below(40) as u32
        });
    }
    v
}

/// QAT to INT4 g8 sym (44-wide rows: groups 8·5 + 4), F16 small tensors, `steps` steps.
pub fn config(steps: usize) -> QatConfig {
    let mut cfg = QatConfig::default();
    cfg.quant.format = QuantFormat::new(4, Some(8), false).unwrap();
    cfg.quant.small = SmallFormat::F16;
    cfg.train.steps = steps;
    cfg.train.batch_size = 2;
    cfg.train.seq_len = 16;
    cfg.train.warmup_steps = 0;
    cfg.train.lr = 5e-3;
    cfg.train.min_lr = 5e-3;
    cfg.train.eval_chunks = 2;
    cfg
}

/// The logits of a (packed) checkpoint's model on `toks`.
pub fn exported_logits(c: &Checkpoint, toks: &[Vec<u32>]) -> Vec<f32> {
    let dev = CpuBackend::default().device();
    match &c.config {
        ModelConfig::Llama(lc) => tensor_to_vec(
            Llama::from_weights(lc, &c.weights, &dev)
                .unwrap()
                .forward(toks)
                .unwrap(),
        )
        .unwrap(),
        ModelConfig::SsmMoe(sc) => tensor_to_vec(
            SsmMoe::from_weights(sc, &c.weights, &dev, ScanMode::Sequential)
                .unwrap()
                .forward(toks)
                .unwrap()
                .logits,
        )
        .unwrap(),
    }
}

/// A placeholder training summary for [`export`] calls.
pub fn summary() -> QatSummary {
    QatSummary {
        init: QatInit::F32,
        scales: QatScales::MinMax,
        steps: 0,
        tokens: 0,
        train_seconds: 0.0,
        first_loss: 0.0,
        last_loss: 0.0,
        valid_nats: None,
        quantized_tensors: 0,
        code_flips: None,
    }
}

/// Trains `cfg` for its steps, then checks that the exported packed checkpoint (through the file
/// format) computes the same logits as the fake-quant network it came from, and not those of
/// the unquantized latents. Returns the export and its report.
pub fn export_matches_fake_quant(base: &Checkpoint, cfg: &QatConfig) -> (Checkpoint, QuantReport) {
    let tr = stream(400, 1);
    let net = qat_net(base, cfg, None).unwrap();
    let (net, log) = train(net, &tr, &tr, 1, &cfg.train, None, |_| {}).unwrap();
    assert_eq!(log.len(), cfg.train.steps);
    let toks: Vec<Vec<u32>> = vec![tr[..16].to_vec(), tr[16..32].to_vec()];
    let fq = tensor_to_vec(net.valid().train_forward(&toks).unwrap().0).unwrap();
    let (packed, report) = export(base, &net, cfg, None, summary()).unwrap();
    assert!(!report.tensors.is_empty());
    // The round trip through the file format keeps it.
    let bytes = squish_core::checkpoint::to_bytes(&packed).unwrap();
    let packed = squish_core::checkpoint::load_bytes(&bytes).unwrap();
    let ex = exported_logits(&packed, &toks);
    let max = fq
        .iter()
        .zip(&ex)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-4, "fake-quant vs exported logits differ by {max}");
    // …and differs from the unquantized latent model (the grid is really applied).
    let lat = tensor_to_vec(match (&net.llama, &net.ssm_moe) {
        (Some(m), _) => m.valid().train_forward(&toks).unwrap().0,
        (_, Some(m)) => m.valid().train_forward(&toks).unwrap().0,
        _ => unreachable!(),
    })
    .unwrap();
    let d = lat
        .iter()
        .zip(&ex)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(d > 1e-3, "latent and quantized logits are identical ({d})");
    (packed, report)
}
