//! Shared helpers of the runtime tests: burn reference logits, RTN quantization
//! of checkpoints, random Llama weights, error measures.
#![allow(dead_code)]

use half::f16;
use squish_core::checkpoint::{TensorData, WeightTensor, Weights};
use squish_core::config::{LlamaConfig, SsmMoeConfig};
use squish_core::data::Rng;
use squish_core::model::llama::{Llama, layer_tensor_names};
use squish_core::model::ssm_moe::{ScanMode, SsmMoe};
use squish_core::model::{CpuBackend, tensor_to_vec};
use squish_core::quant::{QBits, QTensor};

/// burn's logits `[seq, vocab]` for one token row (the ground truth).
pub fn burn_llama(c: &LlamaConfig, w: &Weights, tokens: &[u32]) -> Vec<f32> {
    let m = Llama::from_weights(c, w, &CpuBackend::from_env().unwrap().device()).unwrap();
    tensor_to_vec(m.forward(&[tokens.to_vec()]).unwrap()).unwrap()
}

/// burn's logits `[seq, vocab]` for one token row (sequential scan).
pub fn burn_ssm(c: &SsmMoeConfig, w: &Weights, tokens: &[u32]) -> Vec<f32> {
    let m = SsmMoe::from_weights(
        c,
        w,
        &CpuBackend::from_env().unwrap().device(),
        ScanMode::Sequential,
    )
    .unwrap();
    tensor_to_vec(m.forward(&[tokens.to_vec()]).unwrap().logits).unwrap()
}

/// `max |a − b|` (panics on length mismatch or non-finite values).
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert!(x.is_finite() && y.is_finite(), "non-finite logit {x} / {y}");
            (x - y).abs()
        })
        .fold(0.0, f32::max)
}

/// `max |a|`.
pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Storage format for [`quantize`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fmt {
    F16,
    Q8,
    Q8Asym,
    Q4,
    Q4Asym,
    /// A 4-bit codebook (16 fixed non-uniform levels, nearest codes, F16 group scales).
    Cb4,
}

/// Round-to-nearest quantization of one `[rows, cols]` matrix at group `g`
/// (clamped to `cols`), F16 scales.
pub fn quantize_tensor(v: &[f32], rows: usize, cols: usize, fmt: Fmt, g: usize) -> TensorData {
    if fmt == Fmt::F16 {
        return TensorData::F16(v.iter().map(|x| f16::from_f32(*x)).collect());
    }
    if fmt == Fmt::Cb4 {
        let levels: Vec<f32> = (0..16).map(|k| ((k as f32 - 7.5) / 7.5).powi(3)).collect();
        let c = squish_core::codebook::CbTensor::from_float(v, rows, cols, g.min(cols), levels);
        return TensorData::Codebook(c.unwrap());
    }
    let g = g.min(cols);
    let ng = cols.div_ceil(g);
    let (bits, asym, qmax) = match fmt {
        Fmt::Q8 => (QBits::Int8, false, 127.0),
        Fmt::Q8Asym => (QBits::Int8, true, 255.0),
        Fmt::Q4 => (QBits::Int4, false, 7.0),
        Fmt::Q4Asym => (QBits::Int4, true, 15.0),
        Fmt::F16 | Fmt::Cb4 => unreachable!(),
    };
    let mut levels = vec![0i32; rows * cols];
    let mut scales = Vec::with_capacity(rows * ng);
    let mut zeros = Vec::with_capacity(rows * ng);
    for r in 0..rows {
        for gi in 0..ng {
            let (c0, c1) = (gi * g, ((gi + 1) * g).min(cols));
            let blk = &v[r * cols + c0..r * cols + c1];
            let (lo, hi) = blk
                .iter()
                .fold((0f32, 0f32), |(a, b), x| (a.min(*x), b.max(*x)));
            if asym {
                let s = f16::from_f32(((hi - lo) / qmax).max(1e-8)).to_f32();
                let z = (-lo / s).round().clamp(0.0, qmax);
                for (c, x) in blk.iter().enumerate() {
                    levels[r * cols + c0 + c] = ((x / s).round() + z).clamp(0.0, qmax) as i32;
                }
                scales.push(f16::from_f32(s));
                zeros.push(z as u8);
            } else {
                let amax = lo.abs().max(hi.abs());
                let s = f16::from_f32((amax / qmax).max(1e-8)).to_f32();
                let lo_l = if bits == QBits::Int4 { -8.0 } else { -127.0 };
                for (c, x) in blk.iter().enumerate() {
                    levels[r * cols + c0 + c] = (x / s).round().clamp(lo_l, qmax) as i32;
                }
                scales.push(f16::from_f32(s));
            }
        }
    }
    let q =
        QTensor::from_levels(bits, rows, cols, g, &levels, scales, asym.then_some(zeros)).unwrap();
    TensorData::Quant(q)
}

/// Copy of `w` with every matmul weight (2-D `*.weight` except conv taps) stored as
/// `pick(name)` (`None` keeps F32) at group `g`.
pub fn quantize(w: &Weights, g: usize, pick: impl Fn(&str) -> Option<Fmt>) -> Weights {
    let mut out = Weights::new();
    for (name, t) in w.iter() {
        let matmul =
            t.shape.len() == 2 && name.ends_with(".weight") && !name.ends_with("conv.weight");
        let data = match (matmul, pick(name)) {
            (true, Some(f)) => quantize_tensor(&t.to_f32(), t.shape[0], t.shape[1], f, g),
            _ => t.data.clone(),
        };
        out.insert(
            name.clone(),
            WeightTensor {
                shape: t.shape.clone(),
                data,
            },
        );
    }
    out
}

/// Uniform values in `[-a, a]`.
pub fn uniform(rng: &mut Rng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * a).collect()
}

/// Random Llama weights for `c` with per-layer FFN widths `hidden[i]`.
pub fn random_llama(c: &LlamaConfig, hidden: &[usize], seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let (d, hs) = (c.dim, c.head_size());
    let (qd, kvd) = (c.n_heads * hs, c.n_kv_heads * hs);
    let mut w = Weights::new();
    let mut put = |w: &mut Weights, name: String, shape: Vec<usize>, a: f32, base: f32| {
        let n = shape.iter().product();
        let v = uniform(&mut rng, n, a)
            .into_iter()
            .map(|x| x + base)
            .collect();
        w.insert(name, WeightTensor::f32(shape, v).unwrap());
    };
    put(
        &mut w,
        "tok_embeddings.weight".into(),
        vec![c.vocab_size, d],
        1.0,
        0.0,
    );
    for (i, &h) in hidden.iter().enumerate() {
        let n = layer_tensor_names(i);
        let s = 1.0 / (d as f32).sqrt();
        put(&mut w, n[0].clone(), vec![d], 0.2, 1.0);
        put(&mut w, n[1].clone(), vec![qd, d], 2.0 * s, 0.0);
        put(&mut w, n[2].clone(), vec![kvd, d], 2.0 * s, 0.0);
        put(&mut w, n[3].clone(), vec![kvd, d], s, 0.0);
        put(&mut w, n[4].clone(), vec![d, qd], s, 0.0);
        put(&mut w, n[5].clone(), vec![d], 0.2, 1.0);
        put(&mut w, n[6].clone(), vec![h, d], s, 0.0);
        put(
            &mut w,
            n[7].clone(),
            vec![d, h],
            1.0 / (h as f32).sqrt(),
            0.0,
        );
        put(&mut w, n[8].clone(), vec![h, d], s, 0.0);
    }
    put(&mut w, "norm.weight".into(), vec![d], 0.2, 1.0);
    if !c.shared_classifier {
        put(
            &mut w,
            "output.weight".into(),
            vec![c.vocab_size, d],
            0.5,
            0.0,
        );
    }
    w
}

/// Deterministic pseudo-random token ids below `vocab`.
pub fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// A tensor's shape and values as F32.
pub fn f32s(w: &Weights, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = w.get(name).unwrap();
    (t.shape.clone(), t.to_f32())
}

/// Inserts (or replaces) an F32 tensor.
pub fn put(w: &mut Weights, name: &str, shape: Vec<usize>, v: Vec<f32>) {
    w.insert(name, WeightTensor::f32(shape, v).unwrap());
}

/// Keeps columns `keep` of a 2-D tensor.
pub fn keep_cols(w: &mut Weights, name: &str, keep: &[usize]) {
    let (s, v) = f32s(w, name);
    let nv: Vec<f32> = v
        .chunks(s[1])
        .flat_map(|r| keep.iter().map(|&c| r[c]).collect::<Vec<_>>())
        .collect();
    put(w, name, vec![s[0], keep.len()], nv);
}

/// Every other index first, then the rest: a non-prefix selection of `k` of `n`.
pub fn pick(n: usize, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).step_by(2).chain((1..n).step_by(2)).collect();
    v.truncate(k);
    v.sort_unstable();
    v
}

/// Keeps rows `keep` (index list) of a 1-D or 2-D tensor, as structured pruning does.
pub fn keep_rows(w: &mut Weights, name: &str, keep: &[usize]) {
    let (s, v) = f32s(w, name);
    let cols = if s.len() == 2 { s[1] } else { 1 };
    let nv: Vec<f32> = keep
        .iter()
        .flat_map(|&r| v[r * cols..(r + 1) * cols].to_vec())
        .collect();
    let mut ns = s.clone();
    ns[0] = keep.len();
    put(w, name, ns, nv);
}
