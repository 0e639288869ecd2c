//! Packing, RTN bounds, short last groups, error cases.

use squish_core::checkpoint::{Checkpoint, TensorData, WeightTensor, Weights};
use squish_core::data::Rng;
use squish_core::quant::{QBits, QTensor};
use squish_quant::grid::{group_ranges, sym_div};
use squish_quant::{
    Method, MseConfig, QuantConfig, QuantFormat, QuantSpec, quantize_checkpoint, quantize_tensor,
};

fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..rows * cols)
        .map(|_| (rng.f32() * 2.0 - 1.0) * (1.0 + 3.0 * rng.f32()))
        .collect()
}

/// RTN quantization of `w [rows, cols]` in `format`.
fn rtn(w: &[f32], rows: usize, cols: usize, format: QuantFormat) -> QTensor {
    let spec = QuantSpec {
        format,
        method: Method::Rtn,
    };
    quantize_tensor(w, rows, cols, &spec, None).unwrap()
}

fn all_formats() -> Vec<QuantFormat> {
    let mut v = Vec::new();
    for bits in [4, 8] {
        for group in [Some(16), Some(32), Some(64), Some(128), None] {
            for asym in [false, true] {
                v.push(QuantFormat::new(bits, group, asym).unwrap());
            }
        }
    }
    v
}

#[test]
fn pack_unpack_is_exact() {
    for fmt in all_formats() {
        let (rows, cols) = (5, 172);
        let w = matrix(rows, cols, 3);
        let g = fmt.group.map_or(cols, |g| g.min(cols));
        let fmt = QuantFormat {
            group: Some(g),
            ..fmt
        };
        let q = rtn(&w, rows, cols, fmt);
        // Re-pack the unpacked levels: identical bytes.
        let levels: Vec<i32> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| {
                if fmt.asym {
                    q.code(r, c) as i32
                } else {
                    q.level(r, c)
                }
            })
            .collect();
        let again = QTensor::from_levels(
            q.bits,
            rows,
            cols,
            q.group,
            &levels,
            q.scales.clone(),
            q.zeros.clone(),
        )
        .unwrap();
        assert_eq!(again, q, "{}", fmt.label());
        // Dequantization is scale × level exactly.
        let d = q.dequantize();
        for r in 0..rows {
            for c in 0..cols {
                let s = q.scales[r * q.n_groups() + c / q.group].to_f32();
                assert_eq!(d[r * cols + c], s * q.level(r, c) as f32);
            }
        }
    }
}

/// RTN bound: every dequantized value is within half a step (`scale / 2`, the group's F16 scale)
/// of the original, for every format — scales are rounded up to F16 before codes are chosen, so
/// no value is clamped.
#[test]
fn rtn_is_within_half_a_step() {
    for fmt in all_formats() {
        for &(rows, cols) in &[(7, 172), (3, 17), (4, 256), (2, 1)] {
            let w = matrix(rows, cols, 11 + cols as u64);
            let fmt = QuantFormat {
                group: fmt.group.map(|g| g.min(cols)),
                ..fmt
            };
            let q = rtn(&w, rows, cols, fmt);
            let d = q.dequantize();
            for r in 0..rows {
                for c in 0..cols {
                    let s = q.scales[r * q.n_groups() + c / q.group].to_f32();
                    let e = (d[r * cols + c] - w[r * cols + c]).abs();
                    assert!(
                        e <= 0.5 * s * (1.0 + 1e-6),
                        "{} [{r},{c}] err {e} > step/2 {}",
                        fmt.label(),
                        s / 2.0
                    );
                }
            }
        }
    }
}

/// The F16 scale is exactly what the codes were chosen against: the symmetric INT4 RTN scale is
/// the smallest F16 ≥ max|w|/7.
#[test]
fn scale_is_f16_rounded_before_codes() {
    let fmt = QuantFormat::new(4, Some(16), false).unwrap();
    let w = matrix(1, 16, 5);
    let q = rtn(&w, 1, 16, fmt);
    let amax = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let s = q.scales[0].to_f32();
    assert!(s >= amax / sym_div(&fmt));
    assert!(half::f16::from_bits(q.scales[0].to_bits() - 1).to_f32() < amax / 7.0);
    for (c, &x) in w.iter().enumerate() {
        assert_eq!(q.level(0, c), (x / s).round() as i32);
    }
}

#[test]
fn short_last_group_is_quantized_not_fallen_back() {
    for &(cols, g) in &[(172usize, 32usize), (17, 16)] {
        let w = matrix(4, cols, 9);
        for method in [Method::Rtn, Method::Mse(MseConfig::default())] {
            let fmt = QuantFormat::new(4, Some(g), false).unwrap();
            let q = quantize_tensor(
                &w,
                4,
                cols,
                &QuantSpec {
                    format: fmt,
                    method,
                },
                None,
            )
            .unwrap();
            assert_eq!(q.bits, QBits::Int4);
            assert_eq!(q.n_groups(), cols.div_ceil(g));
            let last = group_ranges(cols, g).last().unwrap();
            assert_eq!(last.len(), if cols == 172 { 12 } else { 1 });
            // The short group has its own scale, fitted to its own values.
            let amax = w[last.clone()].iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let s = q.scales[q.n_groups() - 1].to_f32();
            assert!(
                s <= amax / 6.0,
                "last-group scale {s} not fitted to its max {amax}"
            );
        }
    }
}

#[test]
fn errors_are_err_not_panics() {
    let w = matrix(2, 8, 1);
    let spec = |bits, group| {
        QuantFormat::new(bits, group, false).map(|format| QuantSpec {
            format,
            method: Method::Rtn,
        })
    };
    assert!(spec(3, Some(4)).unwrap_err().to_string().contains("bits"));
    assert!(spec(16, Some(4)).is_err());
    assert!(spec(4, Some(0)).is_err());
    let too_wide = quantize_tensor(&w, 2, 8, &spec(4, Some(9)).unwrap(), None).unwrap_err();
    assert!(too_wide.to_string().contains("group size 9"), "{too_wide}");
    let mut nan = w.clone();
    nan[5] = f32::NAN;
    assert!(
        quantize_tensor(&nan, 2, 8, &spec(8, Some(4)).unwrap(), None)
            .unwrap_err()
            .to_string()
            .contains("non-finite")
    );
    assert!(quantize_tensor(&w[..15], 2, 8, &spec(8, Some(4)).unwrap(), None).is_err());
    let gptq = QuantSpec {
        format: QuantFormat::new(4, Some(4), false).unwrap(),
        method: Method::parse("gptq").unwrap(),
    };
    assert!(
        quantize_tensor(&w, 2, 8, &gptq, None)
            .unwrap_err()
            .to_string()
            .contains("calibration")
    );
    assert!(Method::parse("foo").is_err());

    // Quantizing an already-quantized checkpoint.
    let q = quantize_tensor(&w, 2, 8, &spec(4, Some(4)).unwrap(), None).unwrap();
    let mut weights = Weights::new();
    weights.insert(
        "layers.0.attention.wq.weight",
        WeightTensor {
            shape: vec![2, 8],
            data: TensorData::Quant(q),
        },
    );
    let ckpt = Checkpoint {
        config: squish_core::config::ModelConfig::Llama(tiny_config()),
        weights,
        provenance: Default::default(),
        metrics: Default::default(),
        tokenizer: None,
    };
    let cfg = QuantConfig::new(QuantFormat::new(4, Some(4), false).unwrap(), Method::Rtn);
    let e = quantize_checkpoint(&ckpt, &cfg, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already quantized"), "{e}");
}

fn tiny_config() -> squish_core::config::LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "dim": 8, "hidden_dim": 16, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "vocab_size": 32, "seq_len": 16, "shared_classifier": true
    }))
    .unwrap()
}

#[test]
fn deterministic_bytes() {
    let w = matrix(16, 172, 2);
    for method in [Method::Rtn, Method::Mse(MseConfig::default())] {
        let spec = QuantSpec {
            format: QuantFormat::new(4, Some(32), true).unwrap(),
            method,
        };
        assert_eq!(
            quantize_tensor(&w, 16, 172, &spec, None).unwrap(),
            quantize_tensor(&w, 16, 172, &spec, None).unwrap()
        );
    }
}
