//! Codebook QAT: the trained levels and scales are exactly what the export packs (logits within
//! 1e-4 at 2, 3 and 4 bits, both families), they get gradients and move, per-tensor overrides
//! stay on the uniform grid, and the combinations QAT cannot train are clear errors.

mod common;

use std::collections::BTreeMap;

use burn::optim::GradientsParams;
use common::qat::{config, export_matches_fake_quant, stream, tiny_ssm_moe};
use common::tiny_llama;
use squish_core::checkpoint::TensorData;
use squish_core::codebook::CbScales;
use squish_core::data::Rng;
use squish_core::model::{CpuBackend, tensor_to_vec};
use squish_core::train::{Trainable, cross_entropy, sample_batch, train};
use squish_quant::qat::{CodebookTarget, build_plan, qat_net};
use squish_quant::qat_net::TensorTarget;
use squish_quant::{
    Calibration, CodebookMode, CodebookSpec, QatConfig, QatData, QatInit, QuantFormat, QuantMethod,
    QuantSettings, qat_checkpoint,
};

/// [`config`] with a learned `bits`-bit codebook (log8 scales) as the default format (groups
/// of 8).
fn codebook_config(steps: usize, bits: u32) -> QatConfig {
    scaled_codebook_config(steps, bits, CbScales::Log8)
}

/// [`codebook_config`] with the scales stored as `scales`.
fn scaled_codebook_config(steps: usize, bits: u32, scales: CbScales) -> QatConfig {
    let mut cfg = config(steps);
    cfg.quant.codebook = Some(CodebookSpec {
        bits,
        learned: true,
        scales,
    });
    cfg
}

#[test]
fn exported_codebooks_equal_the_fake_quant_model_at_2_3_and_4_bits() {
    use CbScales::{F16, Log8};
    for (bits, scales) in [(2, Log8), (3, F16), (3, Log8), (4, Log8)] {
        for base in [tiny_llama(3, 0.2), tiny_ssm_moe()] {
            let cfg = scaled_codebook_config(3, bits, scales);
            let (packed, report) = export_matches_fake_quant(&base, &cfg);
            assert_eq!(packed.provenance.stage, "codebook");
            assert_eq!(packed.provenance.details["format"], format!("cb{bits}-g8"));
            assert_eq!(report.bits, bits);
            assert_eq!(report.method, "qat+codebook");
            let mut coded = 0;
            for (name, t) in packed.weights.iter() {
                if let TensorData::Codebook(c) = &t.data {
                    coded += 1;
                    assert_eq!(c.bits, bits, "{name}");
                    assert_eq!(c.scale_format, scales, "{name}");
                    assert_eq!(c.group, 8.min(c.cols), "{name}");
                    assert!(
                        c.levels.windows(2).all(|p| p[0] <= p[1]),
                        "{name}: unsorted"
                    );
                }
            }
            let reported = report
                .tensors
                .iter()
                .filter(|t| t.format == format!("cb{bits}"));
            assert_eq!(reported.count(), coded);
            assert!(coded >= 7, "only {coded} codebook tensors");
        }
    }
}

#[test]
fn levels_and_scales_get_gradients_and_train() {
    let base = tiny_llama(3, 0.2);
    let cfg = codebook_config(1, 3);
    let net = qat_net(&base, &cfg, None).unwrap();
    let coded = build_plan(&base, &cfg, None)
        .unwrap()
        .entries
        .iter()
        .filter(|e| matches!(e.target, TensorTarget::Codebook { bits: 3, .. }))
        .count();
    assert!(coded > 0);
    assert_eq!(net.levels.len(), coded);
    assert_eq!(net.log_scales.len(), coded);
    let tr = stream(400, 5);
    let (inp, tgt) = sample_batch(&tr, 4, 16, 1, &mut Rng::new(9));
    let (logits, _) = net.train_forward(&inp).unwrap();
    let grads = GradientsParams::from_grads(cross_entropy(logits, &tgt).backward(), &net);
    for p in &net.levels {
        let g = tensor_to_vec(grads.get::<1>(p.id).expect("gradient for the levels")).unwrap();
        assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|x| x.abs() > 0.0));
    }
    for p in &net.log_scales {
        let g = tensor_to_vec(grads.get::<2>(p.id).expect("gradient for a log-scale")).unwrap();
        assert!(g.iter().all(|x| x.is_finite()) && g.iter().any(|x| x.abs() > 0.0));
    }
    let before: Vec<Vec<f32>> = net
        .levels
        .iter()
        .map(|p| tensor_to_vec(p.val()).unwrap())
        .collect();
    let (net, _) = train(
        net,
        &tr,
        &tr,
        1,
        &codebook_config(10, 3).train,
        None,
        |_| {},
    )
    .unwrap();
    for (p, b) in net.levels.iter().zip(&before) {
        assert_ne!(
            tensor_to_vec(p.val()).unwrap(),
            *b,
            "a codebook's levels did not train"
        );
    }
}

/// End to end through `qat_checkpoint`, GPTQ-initialised from calibration statistics: an INT8
/// override stays on the uniform grid, the rest become codebooks, the summary counts both.
#[test]
fn qat_checkpoint_trains_codebooks_beside_uniform_overrides() {
    let base = tiny_llama(3, 0.2);
    let mut cfg = codebook_config(2, 4);
    cfg.init = QatInit::Gptq;
    let int8_row = QuantFormat::new(8, None, false).unwrap();
    let name = "layers.1.feed_forward.w2.weight";
    cfg.per_tensor = BTreeMap::from([(name.to_string(), Some(int8_row))]);
    let tr = stream(600, 3);
    let windows: Vec<Vec<u32>> = tr.chunks(32).take(12).map(<[u32]>::to_vec).collect();
    let cal = Calibration::collect(&base, &windows, &CpuBackend::default().device()).unwrap();
    let data = QatData {
        train: &tr,
        valid: &tr,
        bos: 1,
        teacher: None,
    };
    let (q, report) = qat_checkpoint(&base, &cfg, &data, Some(&cal), &mut |_| {}).unwrap();
    match &q.weights.get(name).unwrap().data {
        TensorData::Quant(t) => assert_eq!(t.bits.bits(), 8),
        other => panic!("{name} not INT8: {other:?}"),
    }
    let codebooks = q
        .weights
        .iter()
        .filter(|(_, t)| matches!(t.data, TensorData::Codebook(_)))
        .count();
    let summary = report.qat.as_ref().unwrap();
    assert_eq!(summary.quantized_tensors, codebooks + 1);
    // Oscillation is measured over every codebook weight (the INT8 override is not one).
    let flips = summary.code_flips.as_ref().expect("code flips measured");
    let coded: usize = q
        .weights
        .iter()
        .filter_map(|(_, t)| match &t.data {
            TensorData::Codebook(c) => Some(c.rows * c.cols),
            _ => None,
        })
        .sum();
    assert_eq!((flips.weights, flips.steps), (coded, 2));
    assert!((0.0..=1.0).contains(&flips.last_step));
    assert!(report.tensors.iter().all(|t| t.rel_output_error.is_some()));
    // Without statistics the GPTQ start is a clear error.
    let e = qat_checkpoint(&base, &cfg, &data, None, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("needs calibration"), "{e}");
}

#[test]
fn untrainable_codebook_combinations_are_clear_errors() {
    let base = tiny_llama(3, 0.2);
    let mut cfg = config(1);
    cfg.quant.codebook = Some(CodebookSpec {
        bits: 4,
        learned: false,
        scales: CbScales::Log8,
    });
    let e = build_plan(&base, &cfg, None).unwrap_err().to_string();
    assert!(e.contains("QAT trains the levels"), "{e}");
    let e = build_plan(&base, &codebook_config(1, 5), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("2, 3 or 4"), "{e}");
    // The stage settings: qat with a learned codebook is valid and calibrates; with a uniform
    // one, or a codebook under mse, it is refused.
    let settings = |method: &str, codebook: &str| {
        let toml = format!(
            "bits = 3\ngroup = 32\nmethod = \"{method}\"\ncodebook = \"{codebook}\"\n\
             [qat.train]\nsteps = 1\nbatch_size = 1\nseq_len = 8\nlr = 1e-3\n"
        );
        toml::from_str::<QuantSettings>(&toml).unwrap()
    };
    let ok = settings("qat", "tensor");
    assert_eq!(ok.method, QuantMethod::Qat);
    assert_eq!(ok.codebook, CodebookMode::Tensor);
    assert!(ok.needs_calibration());
    assert_eq!(ok.quant_config().unwrap().codebook.unwrap().bits, 3);
    let e = settings("qat", "uniform").quant_config().unwrap_err();
    assert!(e.to_string().contains("QAT trains the levels"), "{e}");
    let mut mse = settings("qat", "tensor");
    mse.method = QuantMethod::Mse;
    mse.qat = None;
    let e = mse.quant_config().unwrap_err();
    assert!(e.to_string().contains("not mse"), "{e}");
}

/// Dampening adds a loss that pulls latents onto their levels: the trained result changes, the
/// export still equals the fake-quant forward, and a weight the loop would zero is refused.
#[test]
fn dampening_changes_training_and_keeps_the_export_exact() {
    let base = tiny_llama(3, 0.2);
    let plain = codebook_config(4, 2);
    let mut damped = plain.clone();
    damped.dampen = 5.0;
    let (a, _) = export_matches_fake_quant(&base, &plain);
    let (b, _) = export_matches_fake_quant(&base, &damped);
    assert_ne!(
        squish_core::checkpoint::to_bytes(&a).unwrap(),
        squish_core::checkpoint::to_bytes(&b).unwrap()
    );
    damped.train.balance_coef = 0.0;
    let e = build_plan(&base, &damped, None).unwrap_err().to_string();
    assert!(e.contains("balance_coef"), "{e}");
}

/// A per-tensor codebook override under a uniform INT4 default: that tensor trains as a codebook,
/// the rest stay on the grid, the export equals the fake-quant model; bad overrides are errors.
#[test]
fn per_tensor_codebook_overrides_beside_a_uniform_default() {
    let base = tiny_llama(3, 0.2);
    let mut cfg = config(2);
    let name = "layers.0.feed_forward.w1.weight";
    let cb = CodebookTarget {
        bits: 2,
        group: None,
        scales: CbScales::Log8,
    };
    cfg.per_tensor_codebook = BTreeMap::from([(name.to_string(), cb)]);
    let (packed, _) = export_matches_fake_quant(&base, &cfg);
    for (n, t) in packed.weights.iter() {
        match &t.data {
            TensorData::Codebook(c) => {
                assert_eq!(n, name);
                assert_eq!((c.bits, c.group), (2, c.cols));
            }
            _ => assert_ne!(n, name),
        }
    }
    let bad = |edit: &dyn Fn(&mut QatConfig)| {
        let mut c = cfg.clone();
        edit(&mut c);
        build_plan(&base, &c, None).unwrap_err().to_string()
    };
    let e = bad(&|c| {
        c.per_tensor_codebook.insert("no.such.weight".into(), cb);
    });
    assert!(e.contains("no.such.weight"), "{e}");
    let e = bad(&|c| {
        c.per_tensor.insert(name.into(), None);
    });
    assert!(e.contains("also has a per_tensor"), "{e}");
    let e = bad(&|c| {
        c.per_tensor_codebook.insert("norm.weight".into(), cb);
    });
    assert!(e.contains("2-D"), "{e}");
    let e = bad(&|c| {
        c.per_tensor_codebook.insert(
            name.into(),
            CodebookTarget {
                group: Some(10_000),
                ..cb
            },
        );
    });
    assert!(e.contains("row width"), "{e}");
}
