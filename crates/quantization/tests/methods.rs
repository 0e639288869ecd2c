//! GPTQ vs RTN on correlated inputs, MSE vs RTN, and the whole-checkpoint path on a tiny Llama
//! (calibration capture, AWQ folds exact in F32, every linear packed).

mod common;

use burn::tensor::Device;
use common::{gauss, tiny_llama};
use squish_core::checkpoint::{Checkpoint, TensorData};
use squish_core::config::ModelConfig;
use squish_core::data::Rng;
use squish_core::model::llama::Llama;
use squish_core::model::{CpuBackend, tensor_to_vec};
use squish_quant::{
    AwqConfig, Calibration, GptqConfig, Method, MseConfig, QuantConfig, QuantFormat, QuantSpec,
    TensorStats, quantize_checkpoint, quantize_tensor,
};

/// Inputs `x [n, cols]` with strongly correlated columns (a low-rank mix plus noise) and
/// column scales spread over two orders of magnitude.
fn correlated_inputs(n: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let k = 8;
    let mix: Vec<f32> = (0..k * cols).map(|_| gauss(&mut rng)).collect(); // [k, cols]
    let scale: Vec<f32> = (0..cols)
        .map(|c| 10f32.powf(-1.0 + 2.0 * c as f32 / cols as f32))
        .collect();
    let mut x = vec![0.0f32; n * cols];
    for r in 0..n {
        let z: Vec<f32> = (0..k).map(|_| gauss(&mut rng)).collect();
        for c in 0..cols {
            let v: f32 =
                (0..k).map(|j| z[j] * mix[j * cols + c]).sum::<f32>() + 0.1 * gauss(&mut rng);
            x[r * cols + c] = v * scale[c];
        }
    }
    x
}

fn out_err(stats: &TensorStats, w: &[f32], spec: &QuantSpec, rows: usize, cols: usize) -> f64 {
    let q = quantize_tensor(w, rows, cols, spec, Some(stats))
        .unwrap()
        .dequantize();
    stats.relative_output_error(w, &q, rows)
}

#[test]
fn gptq_output_error_is_at_most_rtn() {
    let (rows, cols) = (48, 172);
    let mut rng = Rng::new(4);
    let w: Vec<f32> = (0..rows * cols).map(|_| gauss(&mut rng) * 0.1).collect();
    let stats = TensorStats::from_inputs(&correlated_inputs(2048, cols, 7), cols);
    for (bits, group, asym) in [
        (4, Some(32), false),
        (4, Some(32), true),
        (4, None, false),
        (8, Some(64), false),
        (4, Some(16), false),
    ] {
        let format = QuantFormat::new(bits, group, asym).unwrap();
        let rtn = out_err(
            &stats,
            &w,
            &QuantSpec {
                format,
                method: Method::Rtn,
            },
            rows,
            cols,
        );
        for act_order in [false, true] {
            let g = Method::Gptq(GptqConfig {
                act_order,
                ..GptqConfig::default()
            });
            let gptq = out_err(&stats, &w, &QuantSpec { format, method: g }, rows, cols);
            eprintln!(
                "{} act_order={act_order}: rtn {rtn:.5} gptq {gptq:.5}",
                format.label()
            );
            assert!(gptq <= rtn, "{}: gptq {gptq} > rtn {rtn}", format.label());
        }
    }
}

#[test]
fn weighted_mse_beats_rtn_on_output_error() {
    let (rows, cols) = (32, 64);
    let mut rng = Rng::new(8);
    let w: Vec<f32> = (0..rows * cols).map(|_| gauss(&mut rng) * 0.1).collect();
    let stats = TensorStats::from_inputs(&correlated_inputs(1024, cols, 3), cols);
    let format = QuantFormat::new(4, Some(32), false).unwrap();
    let rtn = out_err(
        &stats,
        &w,
        &QuantSpec {
            format,
            method: Method::Rtn,
        },
        rows,
        cols,
    );
    let mse = out_err(
        &stats,
        &w,
        &QuantSpec {
            format,
            method: Method::Mse(MseConfig::default()),
        },
        rows,
        cols,
    );
    assert!(mse < rtn, "mse {mse} rtn {rtn}");
}

fn windows(n: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            (0..len)
                .map(|j| if j == 0 { 1 } else { rng.below(40) as u32 })
                .collect()
        })
        .collect()
}

fn logits(ckpt: &Checkpoint, device: &Device, toks: &[Vec<u32>]) -> Vec<f32> {
    let ModelConfig::Llama(c) = &ckpt.config else {
        unreachable!()
    };
    tensor_to_vec(
        Llama::from_weights(c, &ckpt.weights, device)
            .unwrap()
            .forward(toks)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn checkpoint_path_gptq_awq_on_tiny_llama() {
    let device = CpuBackend::default().device();
    let ckpt = tiny_llama(1, 0.3);
    let cal = Calibration::collect(&ckpt, &windows(12, 32, 2), &device).unwrap();
    // Every linear has statistics, with the right width; shared inputs were captured once each.
    assert_eq!(cal.get("layers.1.feed_forward.w2.weight").unwrap().cols, 44);
    assert_eq!(
        cal.get("layers.0.attention.wq.weight"),
        cal.get("layers.0.attention.wv.weight")
    );
    assert_eq!(cal.get("tok_embeddings.weight").unwrap().n, 12 * 32);

    // AWQ folds are exact in F32: the scaled model computes the same logits.
    let mut scaled = ckpt.clone();
    let mut cal2 = cal.clone();
    let fmt = QuantFormat::new(4, Some(8), false).unwrap();
    let sites =
        squish_quant::awq::apply_awq(&mut scaled, &mut cal2, &fmt, &AwqConfig::default()).unwrap();
    assert_eq!(sites.len(), 8); // 4 per layer; the tied classifier is skipped
    assert!(sites.iter().all(|s| s.error_after <= s.error_before));
    assert!(
        sites.iter().any(|s| s.alpha > 0.0),
        "AWQ never scaled anything"
    );
    let toks = windows(2, 32, 9);
    let (a, b) = (
        logits(&ckpt, &device, &toks),
        logits(&scaled, &device, &toks),
    );
    let md = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(md < 1e-3, "AWQ fold changed the F32 logits by {md}");

    // Whole-checkpoint GPTQ (+AWQ): every linear is q4, norms stay F32, output errors reported.
    for awq in [None, Some(AwqConfig::default())] {
        let mut cfg = QuantConfig::new(fmt, Method::Gptq(GptqConfig::default()));
        cfg.awq = awq;
        let (q, report) = quantize_checkpoint(&ckpt, &cfg, Some(&cal)).unwrap();
        assert_eq!(q.provenance.stage, "int4_native");
        assert_eq!(report.tensors.len(), 15);
        assert_eq!(report.kept.len(), 5);
        for (name, t) in q.weights.iter() {
            let quant = matches!(t.data, TensorData::Quant(_));
            assert_eq!(quant, !name.contains("norm"), "{name}");
        }
        assert!(
            report
                .tensors
                .iter()
                .all(|t| t.rel_output_error.unwrap() < 0.5)
        );
        let bytes = squish_core::checkpoint::to_bytes(&q).unwrap();
        assert_eq!(squish_core::checkpoint::load_bytes(&bytes).unwrap(), q);
        // Deterministic: same inputs, same bytes.
        let (q2, _) = quantize_checkpoint(&ckpt, &cfg, Some(&cal)).unwrap();
        assert_eq!(squish_core::checkpoint::to_bytes(&q2).unwrap(), bytes);
    }
}
