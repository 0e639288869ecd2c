//! The checkpoint format: round trips for every tensor format, deterministic bytes, and a clear
//! error (never a panic) for each kind of bad file.

use std::collections::BTreeMap;

use half::f16;
use squish_core::checkpoint::{self, Checkpoint, Provenance, TensorData, WeightTensor, Weights};
use squish_core::config::{LlamaConfig, ModelConfig};
use squish_core::quant::{QBits, QTensor};

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
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
    }
}

fn sample_checkpoint() -> Checkpoint {
    let mut w = Weights::new();
    w.insert(
        "a.weight",
        WeightTensor::f32(vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-3, -7.0]).unwrap(),
    );
    w.insert(
        "b.weight",
        WeightTensor {
            shape: vec![4],
            data: TensorData::F16(vec![f16::from_f32(0.5); 4]),
        },
    );
    let levels: Vec<i32> = (0..3 * 172).map(|i| (i % 16) - 8).collect();
    let q4 = QTensor::from_levels(
        QBits::Int4,
        3,
        172,
        32,
        &levels,
        vec![f16::from_f32(0.01); 3 * 6],
        None,
    )
    .unwrap();
    w.insert(
        "c.weight",
        WeightTensor {
            shape: vec![3, 172],
            data: TensorData::Quant(q4),
        },
    );
    let lv8: Vec<i32> = (0..2 * 17).map(|i| i * 7 % 256).collect();
    let q8 = QTensor::from_levels(
        QBits::Int8,
        2,
        17,
        16,
        &lv8,
        vec![f16::from_f32(0.02); 4],
        Some(vec![128, 3, 9, 255]),
    )
    .unwrap();
    w.insert(
        "d.weight",
        WeightTensor {
            shape: vec![2, 17],
            data: TensorData::Quant(q8),
        },
    );
    Checkpoint {
        config: ModelConfig::Llama(tiny_config()),
        weights: w,
        provenance: Provenance {
            stage: "test".into(),
            tool: "squish test".into(),
            ..Default::default()
        },
        metrics: BTreeMap::from([("parameters".into(), 42.0)]),
        tokenizer: None,
    }
}

#[test]
fn every_format_round_trips_and_bytes_are_deterministic() {
    let ck = sample_checkpoint();
    let bytes = checkpoint::to_bytes(&ck).unwrap();
    assert_eq!(
        bytes,
        checkpoint::to_bytes(&ck.clone()).unwrap(),
        "same checkpoint, same bytes"
    );
    let back = checkpoint::load_bytes(&bytes).unwrap();
    assert_eq!(back, ck);
    // The quantized tensor is stored as qweight/scales (and zeros when asymmetric).
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let names: Vec<String> = meta.tensors().keys().cloned().collect();
    for n in [
        "c.weight.qweight",
        "c.weight.scales",
        "d.weight.qweight",
        "d.weight.scales",
        "d.weight.zeros",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    assert!(!names.iter().any(|x| x == "c.weight.zeros"));
}

#[test]
fn save_is_atomic_and_load_reads_it_back() {
    let dir = std::env::temp_dir().join(format!("squish-ckpt-{}", std::process::id()));
    let p = dir.join("m.safetensors");
    let ck = sample_checkpoint();
    checkpoint::save(&ck, &p).unwrap();
    assert_eq!(checkpoint::load(&p).unwrap(), ck);
    let err = checkpoint::load(&dir.join("missing.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.safetensors"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Rewrites the JSON header of `bytes` with `edit` (keeping the data section).
fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

fn err_of(bytes: &[u8]) -> String {
    checkpoint::load_bytes(bytes).unwrap_err().to_string()
}

#[test]
fn truncated_file_is_a_clear_error() {
    let bytes = checkpoint::to_bytes(&sample_checkpoint()).unwrap();
    assert!(err_of(&bytes[..5]).contains("shorter than the 8-byte"));
    let e = err_of(&bytes[..bytes.len() - 10]);
    assert!(e.contains("invalid safetensors"), "{e}");
}

#[test]
fn header_length_beyond_the_file_is_rejected_before_allocating() {
    let mut bytes = checkpoint::to_bytes(&sample_checkpoint()).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    let e = err_of(&bytes);
    assert!(e.contains("header length") && e.contains("exceeds"), "{e}");
}

/// Replaces the `squish.quant` metadata string.
fn with_quant(bytes: &[u8], quant: &str) -> Vec<u8> {
    edit_header(bytes, |h| {
        h["__metadata__"]["squish.quant"] = serde_json::Value::String(quant.into())
    })
}

#[test]
fn header_is_compact_and_describes_only_quantized_tensors() {
    let bytes = checkpoint::to_bytes(&sample_checkpoint()).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = meta.metadata().clone().unwrap();
    assert_eq!(md["squish.format"], "2");
    assert_eq!(md["squish.quant"], "4/172/32,8/17/16");
    assert!(!md.contains_key("squish.tensors"));
    assert!(!md["squish.provenance"].contains("null"));
    let mut ck = sample_checkpoint();
    ck.weights
        .insert("x.scales", WeightTensor::f32(vec![1], vec![1.0]).unwrap());
    let e = checkpoint::to_bytes(&ck).unwrap_err().to_string();
    assert!(e.contains("reserved"), "{e}");
}

#[test]
fn dtype_or_shape_disagreeing_with_metadata_is_rejected() {
    let bytes = checkpoint::to_bytes(&sample_checkpoint()).unwrap();
    // A width that changes the packed row bytes.
    let e = err_of(&with_quant(&bytes, "4/170/32,8/17/16"));
    assert!(e.contains("c.weight") && e.contains("metadata says"), "{e}");
    // INT8 claimed for INT4 codes.
    let e = err_of(&with_quant(&bytes, "8/172/32,8/17/16"));
    assert!(e.contains("c.weight") && e.contains("[3, 172]"), "{e}");
    // A group that disagrees with the stored scales.
    let e = err_of(&with_quant(&bytes, "4/172/64,8/17/16"));
    assert!(
        e.contains("c.weight.scales") && e.contains("metadata says"),
        "{e}"
    );
    // Group wider than the row, malformed entries.
    assert!(err_of(&with_quant(&bytes, "4/172/200,8/17/16")).contains("group 200"));
    assert!(err_of(&with_quant(&bytes, "4/172,8/17/16")).contains("bits/cols/group"));
    assert!(err_of(&with_quant(&bytes, "5/172/32,8/17/16")).contains("5 bits"));
}

#[test]
fn nan_and_inf_weights_are_rejected() {
    let mut ck = sample_checkpoint();
    ck.weights.insert(
        "e.weight",
        WeightTensor::f32(vec![2], vec![1.0, f32::NAN]).unwrap(),
    );
    assert!(
        checkpoint::to_bytes(&ck)
            .unwrap_err()
            .to_string()
            .contains("non-finite")
    );
    // Forge a NaN into a valid file's F32 data.
    let ck = sample_checkpoint();
    let bytes = checkpoint::to_bytes(&ck).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut forged = bytes.clone();
    // a.weight is the only F32 tensor and F32 sorts first: its first value starts the data.
    forged[8 + n..8 + n + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let e = err_of(&forged);
    assert!(e.contains("non-finite") && e.contains("a.weight"), "{e}");
}

#[test]
fn unknown_format_version_is_rejected() {
    let bytes = checkpoint::to_bytes(&sample_checkpoint()).unwrap();
    let forged = edit_header(&bytes, |h| {
        h["__metadata__"]["squish.format"] = serde_json::json!("99")
    });
    let e = err_of(&forged);
    assert!(e.contains("unknown squish.format version `99`"), "{e}");
}

#[test]
fn undescribed_or_missing_tensors_are_rejected() {
    let bytes = checkpoint::to_bytes(&sample_checkpoint()).unwrap();
    // One quantized tensor left undescribed.
    let e = err_of(&with_quant(&bytes, "4/172/32"));
    assert!(e.contains("squish.quant describes 1"), "{e}");
    // A scales entry without its qweight is an orphan.
    let forged = edit_header(&bytes, |h| {
        let o = h.as_object_mut().unwrap();
        let v = o.remove("b.weight").unwrap();
        o.insert("b.weight.scales".into(), v);
    });
    let e = err_of(&forged);
    assert!(
        e.contains("b.weight.scales") && e.contains("not described"),
        "{e}"
    );
    // A plain tensor must be F32 or F16.
    let forged = edit_header(&bytes, |h| {
        let o = h.as_object_mut().unwrap();
        let v = o.remove("d.weight.zeros").unwrap();
        o.insert("z.weight".into(), v);
    });
    let e = err_of(&forged);
    assert!(e.contains("z.weight") && e.contains("F32 or F16"), "{e}");
    let forged = edit_header(&bytes, |h| {
        h["__metadata__"]["squish.config"] = serde_json::json!("{\"arch\":\"llama\",\"dim\":8}");
    });
    assert!(err_of(&forged).contains("squish.config"));
}

#[test]
fn version_1_files_are_still_read() {
    let ck = sample_checkpoint();
    let bytes = checkpoint::to_bytes(&ck).unwrap();
    let v1 = edit_header(&bytes, |h| {
        let md = &mut h["__metadata__"];
        md["squish.format"] = serde_json::json!("1");
        md.as_object_mut().unwrap().remove("squish.quant");
        let tensors = serde_json::json!({
            "a.weight": {"format": "f32", "shape": [2, 3]},
            "b.weight": {"format": "f16", "shape": [4]},
            "c.weight": {"format": "q4", "shape": [3, 172], "group": 32, "asym": false},
            "d.weight": {"format": "q8", "shape": [2, 17], "group": 16, "asym": true},
        });
        md["squish.tensors"] = serde_json::Value::String(tensors.to_string());
    });
    assert_eq!(checkpoint::load_bytes(&v1).unwrap(), ck);
}
