//! End-to-end checks of `mixed_checkpoint` on a tiny random Llama: real file bytes within the
//! budget, the dual problem, the sensitivity cache, the SVG, and clear errors.

use std::path::PathBuf;

use squish_core::checkpoint::{self, Checkpoint, WeightTensor, Weights};
use squish_core::config::{LlamaConfig, ModelConfig};
use squish_core::data::Rng;
use squish_kernels::runtime::Runtime;
use squish_mixed::{
    Budget, CandidateFormat, MixedConfig, MixedData, MixedEvent, PointKind, codebook_candidates,
    frontier_svg, mixed_checkpoint,
};

const VOCAB: usize = 48;

fn gauss(rng: &mut Rng) -> f32 {
    let (u1, u2) = (rng.f32().max(1e-7), rng.f32());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

fn tiny_llama() -> Checkpoint {
    let (dim, hidden) = (32, 64);
    let c = LlamaConfig {
        dim,
        hidden_dim: hidden,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: VOCAB,
        seq_len: 64,
        shared_classifier: true,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let mut rng = Rng::new(11);
    let mut w = Weights::new();
    let mut put = |name: String, shape: Vec<usize>, rng: &mut Rng| {
        let n: usize = shape.iter().product();
        let gain = shape.len() == 1;
        let v = (0..n)
            .map(|_| {
                if gain {
                    1.0 + 0.2 * gauss(rng)
                } else {
                    0.4 * gauss(rng)
                }
            })
            .collect();
        w.insert(name, WeightTensor::f32(shape, v).unwrap());
    };
    put("tok_embeddings.weight".into(), vec![VOCAB, dim], &mut rng);
    put("norm.weight".into(), vec![dim], &mut rng);
    for i in 0..2 {
        for (n, s) in [
            ("attention_norm.weight", vec![dim]),
            ("attention.wq.weight", vec![dim, dim]),
            ("attention.wk.weight", vec![dim / 2, dim]),
            ("attention.wv.weight", vec![dim / 2, dim]),
            ("attention.wo.weight", vec![dim, dim]),
            ("ffn_norm.weight", vec![dim]),
            ("feed_forward.w1.weight", vec![hidden, dim]),
            ("feed_forward.w2.weight", vec![dim, hidden]),
            ("feed_forward.w3.weight", vec![hidden, dim]),
        ] {
            put(format!("layers.{i}.{n}"), s, &mut rng);
        }
    }
    Checkpoint {
        config: ModelConfig::Llama(c),
        weights: w,
        provenance: Default::default(),
        metrics: Default::default(),
        tokenizer: None,
    }
}

/// Token streams from a simple Markov chain (so the model's loss is not trivially uniform).
fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut t = vec![1u32];
    for _ in 1..n {
        let prev = *t.last().unwrap() as usize;
        let next = if rng.f32() < 0.6 {
            (prev * 7 + 3) % VOCAB
        } else {
            rng.below(VOCAB)
        };
        t.push(next as u32);
    }
    t
}

fn windows(n: usize, len: usize) -> Vec<Vec<u32>> {
    tokens(n * len, 5)
        .chunks(len)
        .map(|c| {
            let mut c = c.to_vec();
            c[0] = 1;
            c
        })
        .collect()
}

fn cfg(budget: Budget) -> MixedConfig {
    MixedConfig {
        budget,
        calib_windows: 4,
        frontier_points: 3,
        eval_ctx: 32,
        ..MixedConfig::default()
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("squish-mixed-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn byte_budget_is_respected_by_real_file_bytes_and_the_runtime_runs_the_mix() {
    let ck = tiny_llama();
    let (calib, valid) = (windows(4, 48), tokens(200, 9));
    let data = MixedData {
        calib: &calib,
        valid: &valid,
        bos: 1,
    };
    // Find the range of possible sizes from a generous first run.
    let (_, r0) = mixed_checkpoint(
        &ck,
        &cfg(Budget::Bytes(10_000_000)),
        &data,
        None,
        &mut |_| {},
    )
    .unwrap();
    let smallest = r0
        .frontier
        .iter()
        .filter(|p| p.kind == PointKind::Mixed)
        .map(|p| p.file_bytes)
        .min()
        .unwrap();
    let largest = r0.frontier.iter().map(|p| p.file_bytes).max().unwrap();
    for frac in [0.0, 0.1, 0.35, 0.7] {
        let budget = smallest + ((largest - smallest) as f64 * frac) as u64;
        let mut events = Vec::new();
        let (out, r) = mixed_checkpoint(&ck, &cfg(Budget::Bytes(budget)), &data, None, &mut |e| {
            events.push(e.clone())
        })
        .unwrap();
        let real = checkpoint::to_bytes(&out).unwrap().len() as u64;
        assert!(real <= budget, "file {real} > budget {budget}");
        assert_eq!(real, r.file_bytes);
        assert!(r.measured_ppl.is_some() && r.predicted_ppl.is_some());
        assert!(events.iter().any(|e| matches!(e, MixedEvent::Solved(_))));
        // Round trip through the file format and run it natively.
        let back = checkpoint::load_bytes(&checkpoint::to_bytes(&out).unwrap()).unwrap();
        let mut rt = Runtime::load(&back).unwrap();
        assert!(
            rt.prefill(&valid[..16])
                .unwrap()
                .iter()
                .all(|x| x.is_finite())
        );
        assert!(r.tensors.iter().any(|t| t.format != "f32"));
        assert!(r.dp_exact);
    }
    // Bits/param is the same constraint in other units.
    let bpp = 8.0 * (smallest + 500) as f64 / r0.parameters as f64;
    let (out, _) = mixed_checkpoint(
        &ck,
        &cfg(Budget::BitsPerParam(bpp)),
        &data,
        None,
        &mut |_| {},
    )
    .unwrap();
    assert!(checkpoint::to_bytes(&out).unwrap().len() as f64 * 8.0 / r0.parameters as f64 <= bpp);
}

/// With the codebook candidates the frontier reaches below the integer formats: a budget under
/// the smallest integer mix is met with codebook tensors, the file runs natively, and every
/// codebook gets its uniform frontier point.
#[test]
fn codebook_candidates_extend_the_frontier_below_the_integer_formats() {
    let ck = tiny_llama();
    let (calib, valid) = (windows(4, 48), tokens(200, 9));
    let data = MixedData {
        calib: &calib,
        valid: &valid,
        bos: 1,
    };
    let ints = cfg(Budget::Bytes(10_000_000));
    let (_, r0) = mixed_checkpoint(&ck, &ints, &data, None, &mut |_| {}).unwrap();
    let smallest_int = r0.frontier.iter().map(|p| p.file_bytes).min().unwrap();
    let mut c = cfg(Budget::Bytes(smallest_int - 1));
    c.candidates.extend(codebook_candidates());
    c.candidates
        .push(CandidateFormat::parse("cb2-g16").unwrap());
    let (out, r) = mixed_checkpoint(&ck, &c, &data, None, &mut |_| {}).unwrap();
    let bytes = checkpoint::to_bytes(&out).unwrap();
    assert!((bytes.len() as u64) < smallest_int);
    assert!(
        r.tensors.iter().any(|t| t.format.starts_with("cb")),
        "{:?}",
        r.tensors.iter().map(|t| &t.format).collect::<Vec<_>>()
    );
    let back = checkpoint::load_bytes(&bytes).unwrap();
    let mut rt = Runtime::load(&back).unwrap();
    assert!(
        rt.prefill(&valid[..16])
            .unwrap()
            .iter()
            .all(|x| x.is_finite())
    );
    for label in ["cb2-g64", "cb3-g64", "cb4-g64", "cb2-g16"] {
        let want = format!("uniform {label}");
        assert!(
            r.frontier.iter().any(|p| p.label == want),
            "no point {want}"
        );
    }
}

#[test]
fn dual_problem_gives_fewest_bytes_for_the_target() {
    let ck = tiny_llama();
    let calib = windows(4, 48);
    let data = MixedData {
        calib: &calib,
        valid: &[],
        bos: 1,
    };
    let mut c = cfg(Budget::MaxDppl(2.0));
    c.measure_frontier = false;
    let (out, r) = mixed_checkpoint(&ck, &c, &data, None, &mut |_| {}).unwrap();
    assert!(
        r.predicted_dnats <= (1.02f64).ln() + 1e-12,
        "{}",
        r.predicted_dnats
    );
    // Looser targets never need more bytes.
    c.budget = Budget::MaxDppl(50.0);
    let (out2, r2) = mixed_checkpoint(&ck, &c, &data, None, &mut |_| {}).unwrap();
    assert!(
        r2.file_bytes <= r.file_bytes,
        "{} > {}",
        r2.file_bytes,
        r.file_bytes
    );
    assert!(out2.weights.storage_bytes() <= out.weights.storage_bytes());
    // A zero-loss target is reachable (F16 everywhere measures ~0) and a byte budget at that
    // size gives at most the same loss.
    c.budget = Budget::Bytes(r.file_bytes);
    let (_, r3) = mixed_checkpoint(&ck, &c, &data, None, &mut |_| {}).unwrap();
    assert!(r3.predicted_dnats <= r.predicted_dnats + 1e-12);
}

#[test]
fn sensitivity_cache_hits_and_misses_by_key() {
    let ck = tiny_llama();
    let calib = windows(4, 48);
    let data = MixedData {
        calib: &calib,
        valid: &[],
        bos: 1,
    };
    let dir = tmp("cache");
    let mut c = cfg(Budget::Bytes(10_000_000));
    c.cache_dir = Some(dir.clone());
    c.measure_frontier = false;
    c.frontier_points = 0;
    let (a, r1) = mixed_checkpoint(&ck, &c, &data, None, &mut |_| {}).unwrap();
    assert!(!r1.cache_hit);
    assert!(PathBuf::from(r1.cache_path.clone().unwrap()).exists());
    let mut hit_event = false;
    let (b, r2) = mixed_checkpoint(&ck, &c, &data, None, &mut |e| {
        hit_event |= matches!(e, MixedEvent::CacheHit { .. })
    })
    .unwrap();
    assert!(r2.cache_hit && hit_event);
    assert_eq!(r1.cache_key, r2.cache_key);
    assert_eq!(r1.sensitivity, r2.sensitivity);
    assert_eq!(
        checkpoint::to_bytes(&a).unwrap(),
        checkpoint::to_bytes(&b).unwrap()
    );
    // Other candidates, other calibration windows or another checkpoint: another key.
    let mut c2 = c.clone();
    c2.candidates = vec![
        CandidateFormat::F16,
        CandidateFormat::parse("int8-row-sym").unwrap(),
    ];
    let (_, r3) = mixed_checkpoint(&ck, &c2, &data, None, &mut |_| {}).unwrap();
    assert!(!r3.cache_hit);
    assert_ne!(r3.cache_key, r1.cache_key);
    let mut c3 = c.clone();
    c3.calib_windows = 3;
    let (_, r4) = mixed_checkpoint(&ck, &c3, &data, None, &mut |_| {}).unwrap();
    assert!(!r4.cache_hit);
    let mut ck2 = ck.clone();
    ck2.weights.get_mut("norm.weight").unwrap().data =
        squish_core::checkpoint::TensorData::F32(vec![0.9; 32]);
    let (_, r5) = mixed_checkpoint(&ck2, &c, &data, None, &mut |_| {}).unwrap();
    assert!(!r5.cache_hit);
    // The budget is not part of the key.
    let mut c4 = c.clone();
    c4.budget = Budget::MaxDppl(5.0);
    let (_, r6) = mixed_checkpoint(&ck, &c4, &data, None, &mut |_| {}).unwrap();
    assert!(r6.cache_hit);
}

/// A minimal XML well-formedness check: balanced, properly nested tags; quoted attributes.
fn well_formed(s: &str) -> Result<usize, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut elements = 0;
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        let text = &rest[..i];
        if text.contains('>') {
            return Err(format!("stray '>' in text {text:?}"));
        }
        let j = rest[i..].find('>').ok_or("unclosed tag")? + i;
        let tag = &rest[i + 1..j];
        if !tag.matches('"').count().is_multiple_of(2) {
            return Err(format!("unbalanced quotes in <{tag}>"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("close </{name}> without open"))?;
            if open != name.trim() {
                return Err(format!("</{name}> closes <{open}>"));
            }
        } else {
            elements += 1;
            let name = tag
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_string();
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[j + 1..];
    }
    if !stack.is_empty() {
        return Err(format!("unclosed {stack:?}"));
    }
    Ok(elements)
}

#[test]
fn svg_is_well_formed_and_has_points() {
    let ck = tiny_llama();
    let (calib, valid) = (windows(4, 48), tokens(200, 9));
    let data = MixedData {
        calib: &calib,
        valid: &valid,
        bos: 1,
    };
    let (_, r) = mixed_checkpoint(
        &ck,
        &cfg(Budget::BitsPerParam(10.0)),
        &data,
        None,
        &mut |_| {},
    )
    .unwrap();
    let svg = frontier_svg(&r);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    well_formed(&svg).unwrap();
    let points = svg.matches("class=\"point").count();
    assert_eq!(points, r.frontier.len());
    assert!(
        svg.contains("point chosen")
            && svg.contains("point uniform")
            && svg.contains("point mixed")
    );
    assert!(svg.contains("<polyline"));
    // Without any perplexity it is still a valid document.
    let mut empty = r.clone();
    empty.frontier.clear();
    well_formed(&frontier_svg(&empty)).unwrap();
    assert!(well_formed("<a><b></a></b>").is_err());
}

#[test]
fn impossible_budgets_and_bad_inputs_are_clear_errors() {
    let ck = tiny_llama();
    let calib = windows(2, 48);
    let data = MixedData {
        calib: &calib,
        valid: &[],
        bos: 1,
    };
    let e = mixed_checkpoint(&ck, &cfg(Budget::Bytes(2000)), &data, None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("below the smallest possible mix") && e.contains("2000"),
        "{e}"
    );
    let e = mixed_checkpoint(
        &ck,
        &cfg(Budget::BitsPerParam(0.5)),
        &data,
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bits/param"), "{e}");
    let e = mixed_checkpoint(&ck, &cfg(Budget::Bytes(0)), &data, None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("> 0"), "{e}");
    let none = MixedData {
        calib: &[],
        valid: &[],
        bos: 1,
    };
    let e = mixed_checkpoint(&ck, &cfg(Budget::Bytes(1 << 20)), &none, None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("calibration windows"), "{e}");
    let mut c = cfg(Budget::Bytes(1 << 20));
    c.candidates.clear();
    assert!(mixed_checkpoint(&ck, &c, &data, None, &mut |_| {}).is_err());
    // An already mixed checkpoint is refused.
    let mut c = cfg(Budget::Bytes(1 << 20));
    c.measure_frontier = false;
    let (mixed, _) = mixed_checkpoint(&ck, &c, &data, None, &mut |_| {}).unwrap();
    let e = mixed_checkpoint(&mixed, &c, &data, None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("F32 checkpoint"), "{e}");
}
