//! The codebook format in checkpoints: round trips at 2, 3 and 4 bits on odd widths with short
//! last groups, and a clear error for each kind of forged file (levels shape, dtype, NaN, order,
//! missing or orphan parts, wrong code lengths, bad padding bits, bad `squish.quant` entries),
//! for F16 scales and for log8 scale codes with F16 levels.

use std::collections::BTreeMap;

use half::f16;
use squish_core::checkpoint::{self, Checkpoint, Provenance, TensorData, WeightTensor, Weights};
use squish_core::codebook::{CbScales, CbTensor, log8_scale};
use squish_core::config::{LlamaConfig, ModelConfig};

fn config() -> ModelConfig {
    ModelConfig::Llama(LlamaConfig {
        dim: 8,
        hidden_dim: 12,
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        vocab_size: 16,
        seq_len: 32,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    })
}

fn cb(bits: u32, rows: usize, cols: usize, group: usize) -> CbTensor {
    let codes: Vec<u8> = (0..rows * cols)
        .map(|i| ((i * 5 + 1) % (1 << bits)) as u8)
        .collect();
    let levels: Vec<f32> = (0..1 << bits).map(|k| (k as f32 - 1.5) * 0.3).collect();
    let ng = cols.div_ceil(group);
    let scales = (0..rows * ng)
        .map(|i| f16::from_f32(0.01 * (i + 1) as f32))
        .collect();
    CbTensor::from_codes(bits, rows, cols, group, &codes, scales, levels).unwrap()
}

/// `a` F32, `b` cb4 [3, 172] g64, `c` cb3 [2, 17] g8, `d` cb2 [5, 13] g13.
fn sample() -> Checkpoint {
    let mut w = Weights::new();
    w.insert(
        "a.weight",
        WeightTensor::f32(vec![2], vec![1.0, -2.0]).unwrap(),
    );
    for (name, t) in [
        ("b.weight", cb(4, 3, 172, 64)),
        ("c.weight", cb(3, 2, 17, 8)),
        ("d.weight", cb(2, 5, 13, 13)),
    ] {
        w.insert(
            name,
            WeightTensor {
                shape: vec![t.rows, t.cols],
                data: TensorData::Codebook(t),
            },
        );
    }
    Checkpoint {
        config: config(),
        weights: w,
        provenance: Provenance {
            stage: "test".into(),
            tool: "squish test".into(),
            ..Default::default()
        },
        metrics: BTreeMap::new(),
        tokenizer: None,
    }
}

fn header(bytes: &[u8]) -> (usize, serde_json::Value) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (n, serde_json::from_slice(&bytes[8..8 + n]).unwrap())
}

/// Rewrites the JSON header of `bytes` with `edit` (keeping the data section).
fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let (n, mut h) = header(bytes);
    edit(&mut h);
    let mut hb = serde_json::to_vec(&h).unwrap();
    while !hb.len().is_multiple_of(8) {
        hb.push(b' ');
    }
    let mut out = (hb.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&hb);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// Overwrites the stored data of tensor `name` from byte `at` with `with`.
fn poke(bytes: &mut [u8], name: &str, at: usize, with: &[u8]) {
    let (n, h) = header(bytes);
    let start = h[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n + at;
    bytes[start..start + with.len()].copy_from_slice(with);
}

fn err_of(bytes: &[u8]) -> String {
    checkpoint::load_bytes(bytes).unwrap_err().to_string()
}

#[test]
fn codebook_tensors_round_trip_with_their_levels() {
    let ck = sample();
    let bytes = checkpoint::to_bytes(&ck).unwrap();
    assert_eq!(checkpoint::load_bytes(&bytes).unwrap(), ck);
    let (_, h) = header(&bytes);
    assert_eq!(
        h["__metadata__"]["squish.quant"],
        "cb4/172/64,cb3/17/8,cb2/13/13"
    );
    assert_eq!(h["b.weight.levels"]["dtype"], "F32");
    assert_eq!(h["b.weight.levels"]["shape"], serde_json::json!([16]));
    assert_eq!(h["b.weight.qweight"]["shape"], serde_json::json!([3, 86]));
    assert_eq!(h["c.weight.qweight"]["shape"], serde_json::json!([2, 7])); // ⌈17·3/8⌉
    assert_eq!(h["d.weight.qweight"]["shape"], serde_json::json!([5, 4])); // ⌈13·2/8⌉
    assert_eq!(h["c.weight.scales"]["shape"], serde_json::json!([2, 3]));
    let w = &ck.weights;
    assert_eq!(w.get("c.weight").unwrap().format_name(), "cb3");
    assert_eq!(
        w.get("b.weight").unwrap().storage_bytes(),
        3 * 86 + 2 * 3 * 3 + 4 * 16
    );
}

#[test]
fn forged_levels_are_clear_errors() {
    let bytes = checkpoint::to_bytes(&sample()).unwrap();
    // Shape: 8 levels for a 4-bit tensor.
    let f = edit_header(&bytes, |h| {
        h["b.weight.levels"]["shape"] = serde_json::json!([2, 8])
    });
    let e = err_of(&f);
    assert!(e.contains("b.weight.levels") && e.contains("[16]"), "{e}");
    // Dtype: F16 levels.
    let f = edit_header(&bytes, |h| {
        h["c.weight.levels"]["dtype"] = "F16".into();
        h["c.weight.levels"]["shape"] = serde_json::json!([16]);
    });
    let e = err_of(&f);
    assert!(e.contains("c.weight.levels") && e.contains("F16"), "{e}");
    // NaN level.
    let mut f = bytes.clone();
    poke(&mut f, "d.weight.levels", 4, &f32::NAN.to_le_bytes());
    let e = err_of(&f);
    assert!(e.contains("d.weight") && e.contains("finite"), "{e}");
    // Decreasing levels.
    let mut f = bytes.clone();
    poke(&mut f, "d.weight.levels", 0, &5.0f32.to_le_bytes());
    let e = err_of(&f);
    assert!(e.contains("non-decreasing"), "{e}");
    // Huge level (scale · level would overflow).
    let mut f = bytes.clone();
    poke(&mut f, "d.weight.levels", 12, &1e30f32.to_le_bytes());
    assert!(err_of(&f).contains("within"));
}

#[test]
fn forged_codes_and_parts_are_clear_errors() {
    let bytes = checkpoint::to_bytes(&sample()).unwrap();
    // Padding bits after the last 3-bit code of a row (17·3 = 51 bits: byte 6 keeps 3 bits).
    let mut f = bytes.clone();
    poke(&mut f, "c.weight.qweight", 6, &[0xff]);
    let e = err_of(&f);
    assert!(e.contains("padding"), "{e}");
    // Codes shaped for 4 bits under a 3-bit entry.
    let f = edit_header(&bytes, |h| {
        h["__metadata__"]["squish.quant"] = "cb4/172/64,cb4/17/8,cb2/13/13".into()
    });
    let e = err_of(&f);
    assert!(e.contains("c.weight"), "{e}");
    // Unknown width.
    let f = edit_header(&bytes, |h| {
        h["__metadata__"]["squish.quant"] = "cb5/172/64,cb3/17/8,cb2/13/13".into()
    });
    assert!(err_of(&f).contains("cb5"));
    // Levels of a tensor described as uniform INT4: an orphan part.
    let f = edit_header(&bytes, |h| {
        h["__metadata__"]["squish.quant"] = "4/172/64,cb3/17/8,cb2/13/13".into()
    });
    let e = err_of(&f);
    assert!(
        e.contains("b.weight.levels") && e.contains("not described"),
        "{e}"
    );
    // Missing levels (stored under another name, so the data section stays consistent).
    let f = edit_header(&bytes, |h| {
        let o = h.as_object_mut().unwrap();
        let v = o.remove("d.weight.levels").unwrap();
        o.insert("d.weight.levelz".into(), v);
    });
    let e = err_of(&f);
    assert!(
        e.contains("d.weight.levels") && e.contains("not stored"),
        "{e}"
    );
}

#[test]
fn reserved_names_and_bad_tensors_are_refused_on_save() {
    let mut ck = sample();
    ck.weights
        .insert("x.levels", WeightTensor::f32(vec![1], vec![0.0]).unwrap());
    assert!(
        checkpoint::to_bytes(&ck)
            .unwrap_err()
            .to_string()
            .contains("reserved")
    );
    let mut ck = sample();
    if let TensorData::Codebook(c) = &mut ck.weights.get_mut("b.weight").unwrap().data {
        c.levels[3] = f32::INFINITY;
    }
    assert!(
        checkpoint::to_bytes(&ck)
            .unwrap_err()
            .to_string()
            .contains("finite")
    );
}

/// `cb(…)` stored with log8 scale codes and F16 levels.
fn cb_log8(bits: u32, rows: usize, cols: usize, group: usize) -> CbTensor {
    let mut t = cb(bits, rows, cols, group);
    t.scales = (0..t.scales.len())
        .map(|i| log8_scale((i * 37 % 256) as u8))
        .collect();
    t.levels = t
        .levels
        .iter()
        .map(|&l| f16::from_f32(l * 0.7).to_f32())
        .collect();
    t.into_scale_format(CbScales::Log8).unwrap()
}

#[test]
fn log8_tensors_round_trip_and_forged_parts_are_clear_errors() {
    let mut ck = sample();
    for (name, t) in [
        ("b.weight", cb_log8(4, 3, 172, 64)),
        ("d.weight", cb_log8(2, 5, 13, 13)),
    ] {
        ck.weights.insert(
            name,
            WeightTensor {
                shape: vec![t.rows, t.cols],
                data: TensorData::Codebook(t),
            },
        );
    }
    let bytes = checkpoint::to_bytes(&ck).unwrap();
    assert_eq!(checkpoint::load_bytes(&bytes).unwrap(), ck);
    let (_, h) = header(&bytes);
    assert_eq!(h["b.weight.scales"]["dtype"], "U8");
    assert_eq!(h["b.weight.scales"]["shape"], serde_json::json!([3, 3]));
    assert_eq!(h["b.weight.levels"]["dtype"], "F16");
    assert_eq!(h["c.weight.scales"]["dtype"], "F16"); // formats mix per tensor
    assert_eq!(
        ck.weights.get("b.weight").unwrap().storage_bytes(),
        3 * 86 + 3 * 3 + 2 * 16
    );
    // F32 levels beside U8 scales.
    let f = edit_header(&bytes, |h| {
        h["d.weight.levels"]["dtype"] = "F32".into();
        h["d.weight.levels"]["shape"] = serde_json::json!([2]);
    });
    let e = err_of(&f);
    assert!(e.contains("d.weight.levels") && e.contains("F16"), "{e}");
    // A NaN F16 level.
    let mut f = bytes.clone();
    poke(&mut f, "d.weight.levels", 2, &f16::NAN.to_le_bytes());
    let e = err_of(&f);
    assert!(e.contains("d.weight") && e.contains("finite"), "{e}");
    // Scales shaped for another group size.
    let f = edit_header(&bytes, |h| {
        h["b.weight.scales"]["shape"] = serde_json::json!([9])
    });
    assert!(err_of(&f).contains("b.weight.scales"));
    // In memory: a scale off the grid, a level that is not an F16 value.
    let mut t = cb_log8(3, 2, 17, 8);
    t.scales[1] = f16::from_f32(0.3);
    let e = t.validate("w").unwrap_err().to_string();
    assert!(e.contains("log8 grid"), "{e}");
    let mut t = cb_log8(3, 2, 17, 8);
    t.levels[7] = 1.1; // still the largest, but between two F16 values
    let e = t.validate("w").unwrap_err().to_string();
    assert!(e.contains("not an F16 value"), "{e}");
}
