//! QAT: the fake-quant forward equals the exported packed model, gradients reach the latent
//! weights through the straight-through estimator, per-tensor formats are respected, and
//! unsupported combinations are clear errors. Tiny models, a few steps: fast.

mod common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::GradientsParams;
use common::qat::{config, export_matches_fake_quant, stream, tiny_ssm_moe};
use common::tiny_llama;
use squish_core::checkpoint::{Checkpoint, TensorData};
use squish_core::data::Rng;
use squish_core::model::tensor_to_vec;
use squish_core::train::{Trainable, cross_entropy, sample_batch, train};
use squish_quant::qat::{build_plan, qat_net};
use squish_quant::{
    AwqConfig, QatConfig, QatData, QatInit, QatScales, QuantFormat, qat_checkpoint,
};

/// Three steps of `scales` (asymmetric when `asym`), then the export check.
fn check_export(base: &Checkpoint, scales: QatScales, asym: bool) {
    let mut cfg = config(3);
    cfg.scales = scales;
    cfg.quant.format.asym = asym;
    export_matches_fake_quant(base, &cfg);
}

#[test]
fn exported_llama_equals_fake_quant_model() {
    check_export(&tiny_llama(3, 0.2), QatScales::MinMax, false);
    check_export(&tiny_llama(3, 0.2), QatScales::default(), true);
}

#[test]
fn exported_ssm_moe_equals_fake_quant_model() {
    check_export(&tiny_ssm_moe(), QatScales::default(), false);
}

fn learned() -> QatScales {
    match QatScales::default() {
        QatScales::Mse(m) => QatScales::Learned(m),
        other => other,
    }
}

#[test]
fn learned_scales_export_equals_fake_quant_model() {
    check_export(&tiny_llama(3, 0.2), learned(), false);
    check_export(&tiny_ssm_moe(), learned(), false);
}

#[test]
fn learned_scales_get_gradients_and_move() {
    let base = tiny_llama(3, 0.2);
    let mut cfg = config(1);
    cfg.scales = learned();
    let net = qat_net(&base, &cfg, None).unwrap();
    // One [rows, n_groups] log-scale per quantized tensor; they start at the clipping search.
    let quantized = build_plan(&base, &cfg, None)
        .unwrap()
        .entries
        .iter()
        .filter(|e| matches!(e.target, squish_quant::qat_net::TensorTarget::Quant(_)))
        .count();
    assert_eq!(net.log_scales.len(), quantized);
    let before: Vec<Vec<f32>> = net
        .log_scales
        .iter()
        .map(|p| tensor_to_vec(p.val()).unwrap())
        .collect();
    let tr = stream(400, 5);
    let (inp, tgt) = sample_batch(&tr, 4, 16, 1, &mut Rng::new(9));
    let (logits, _) = net.train_forward(&inp).unwrap();
    let grads = GradientsParams::from_grads(cross_entropy(logits, &tgt).backward(), &net);
    for p in &net.log_scales {
        let g = tensor_to_vec(grads.get::<2>(p.id).expect("gradient for a log-scale")).unwrap();
        assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|x| x.abs() > 0.0));
    }
    let mut cfg = config(10);
    cfg.scales = learned();
    let (net, _) = train(net, &tr, &tr, 1, &cfg.train, None, |_| {}).unwrap();
    let moved = net
        .log_scales
        .iter()
        .zip(&before)
        .filter(|(p, b)| tensor_to_vec(p.val()).unwrap() != **b)
        .count();
    assert_eq!(moved, quantized, "every learned scale trains");
}

#[test]
fn gradients_reach_the_latent_weights_and_a_step_lowers_the_loss() {
    let base = tiny_llama(3, 0.2);
    let cfg = config(1);
    let net = qat_net(&base, &cfg, None).unwrap();
    let tr = stream(400, 2);
    let (inp, tgt) = sample_batch(&tr, 4, 16, 1, &mut Rng::new(7));
    let (logits, _) = net.train_forward(&inp).unwrap();
    let grads = GradientsParams::from_grads(cross_entropy(logits, &tgt).backward(), &net);
    let m = net.llama.as_ref().unwrap();
    for (name, id) in [("wq", m.layers[0].wq.id), ("w2", m.layers[1].w2.id)] {
        let g =
            tensor_to_vec(grads.get::<2>(id).expect("gradient for a quantized latent")).unwrap();
        assert!(g.iter().any(|x| x.abs() > 0.0), "{name}: zero gradient");
    }
    let emb = tensor_to_vec(grads.get::<2>(m.tok_embeddings.id).unwrap()).unwrap();
    assert!(emb.iter().any(|x| x.abs() > 0.0));
    // Training on the same batch lowers the (fake-quant) loss.
    let loss = |n: &squish_quant::qat_net::QatNet| {
        let (l, _) = n.valid().train_forward(&inp).unwrap();
        tensor_to_vec(cross_entropy(l, &tgt)).unwrap()[0]
    };
    let before = loss(&net);
    let mut cfg = config(15);
    cfg.train.batch_size = 4;
    let (net2, _) = train(net, &tr, &tr, 1, &cfg.train, None, |_| {}).unwrap();
    let after = loss(&net2);
    assert!(after < before - 0.05, "loss {before} -> {after}");
}

#[test]
fn qat_checkpoint_distills_and_respects_per_tensor_formats() {
    let base = tiny_llama(3, 0.2);
    let mut cfg = config(2);
    cfg.train.distill_alpha = 0.5;
    let int8_row = QuantFormat::new(8, None, false).unwrap();
    cfg.per_tensor = BTreeMap::from([
        ("layers.0.attention.wq.weight".to_string(), None),
        (
            "layers.1.feed_forward.w2.weight".to_string(),
            Some(int8_row),
        ),
    ]);
    let tr = stream(400, 3);
    let data = QatData {
        train: &tr,
        valid: &tr,
        bos: 1,
        teacher: None,
    };
    let mut points = 0;
    let (q, report) = qat_checkpoint(&base, &cfg, &data, None, &mut |_| points += 1).unwrap();
    assert_eq!(points, 2);
    let fmt = |n: &str| q.weights.get(n).unwrap().data.clone();
    assert!(matches!(
        fmt("layers.0.attention.wq.weight"),
        TensorData::F16(_)
    ));
    assert!(matches!(fmt("norm.weight"), TensorData::F16(_)));
    match fmt("layers.1.feed_forward.w2.weight") {
        TensorData::Quant(t) => assert!(t.bits.bits() == 8 && t.group == 44),
        other => panic!("w2 not INT8: {other:?}"),
    }
    match fmt("layers.0.feed_forward.w2.weight") {
        TensorData::Quant(t) => assert!(t.bits.bits() == 4 && t.group == 8 && t.n_groups() == 6),
        other => panic!("w2 not INT4: {other:?}"),
    }
    let s = report.qat.as_ref().unwrap();
    assert_eq!(s.steps, 2);
    assert!(s.valid_nats.is_some_and(f64::is_finite));
    assert_eq!(report.method, "qat");
    assert_eq!(q.provenance.details["method"], "qat");
}

#[test]
fn unsupported_combinations_are_clear_errors() {
    let base = tiny_llama(3, 0.2);
    let tr = stream(400, 4);
    let data = QatData {
        train: &tr,
        valid: &tr,
        bos: 1,
        teacher: None,
    };
    let err = |cfg: &QatConfig| {
        qat_checkpoint(&base, cfg, &data, None, &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    let mut c = config(1);
    c.quant.awq = Some(AwqConfig::default());
    assert!(err(&c).contains("AWQ"), "{}", err(&c));
    let mut c = config(1);
    c.per_tensor.insert(
        "norm.weight".into(),
        Some(QuantFormat::new(4, None, false).unwrap()),
    );
    assert!(err(&c).contains("1-D"), "{}", err(&c));
    let mut c = config(1);
    c.per_tensor.insert("no.such.weight".into(), None);
    assert!(err(&c).contains("not in the checkpoint"), "{}", err(&c));
    let mut c = config(1);
    c.per_tensor.insert(
        "layers.0.attention.wq.weight".into(),
        Some(QuantFormat::new(4, Some(32), false).unwrap()),
    );
    assert!(err(&c).contains("group size 32"), "{}", err(&c));
    let mut c = config(1);
    c.init = QatInit::Gptq;
    assert!(err(&c).contains("needs calibration"), "{}", err(&c));
    let mut c = config(1);
    c.scales = learned();
    c.quant.format.asym = true;
    assert!(err(&c).contains("symmetric formats only"), "{}", err(&c));
    // An already-quantized input.
    let (q, _) = qat_checkpoint(&base, &config(1), &data, None, &mut |_| {}).unwrap();
    assert!(err_plan(&q).contains("already quantized"));
    // Config files: unknown keys are rejected, defaults fill the rest.
    let json = r#"{"quant":{"format":{"bits":"int4","group":64,"asym":false},"method":{"method":"rtn"}},"bogus":1}"#;
    assert!(serde_json::from_str::<QatConfig>(json).is_err());
    let json = r#"{"quant":{"format":{"bits":"int4","group":64,"asym":false},"method":{"method":"rtn"}},"init":"gptq","scales":{"kind":"minmax"}}"#;
    let c: QatConfig = serde_json::from_str(json).unwrap();
    assert_eq!((c.init, c.scales), (QatInit::Gptq, QatScales::MinMax));
}

fn err_plan(q: &Checkpoint) -> String {
    build_plan(q, &config(1), None).unwrap_err().to_string()
}

/// `QatData::teacher`: naming the input itself is the default (same bytes); another model of
/// the same family changes what QAT distils towards; another family or vocabulary is a clear
/// error.
#[test]
fn qat_distils_from_the_named_teacher() {
    let base = tiny_llama(3, 0.2);
    let other = tiny_llama(9, 0.2);
    let cfg = config(2);
    let tr = stream(400, 5);
    let run = |teacher: Option<&Checkpoint>| {
        let data = QatData {
            train: &tr,
            valid: &tr,
            bos: 1,
            teacher,
        };
        let (q, _) = qat_checkpoint(&base, &cfg, &data, None, &mut |_| {}).unwrap();
        squish_core::checkpoint::to_bytes(&q).unwrap()
    };
    let default = run(None);
    assert_eq!(
        default,
        run(Some(&base)),
        "teacher = input must be the default"
    );
    assert_ne!(
        default,
        run(Some(&other)),
        "another teacher must change the result"
    );

    let ssm = tiny_ssm_moe();
    let data = QatData {
        train: &tr,
        valid: &tr,
        bos: 1,
        teacher: Some(&ssm),
    };
    let err = qat_checkpoint(&base, &cfg, &data, None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another model family"), "{err}");
}
