//! Importance of every unit of every prunable dimension, aggregated over its group's members.
//!
//! Element scores: L1 `|w|`, L2 `w²` (the unit's score is the root of the sum), Wanda
//! `|w_ij|·‖X_j‖` with `X` the layer input captured on calibration windows (tensors that are not
//! linear layers fall back to `|w|`), Taylor `Σ_batches |w·∂L/∂w|`. Activation importance
//! (Minitron) scores whole units by the mean |x| of the inputs they feed (see
//! [`Importance::Activation`]). Experts and expert channels
//! can additionally be weighted by the expert's utilisation (its mean routing gate on the
//! calibration tokens, normalised to mean 1 per layer).

use std::collections::BTreeMap;

use squish_core::checkpoint::Weights;
use squish_core::model::ssm_moe_weights::router_name;
use squish_core::model::structure::{DimKind, ModelStructure, PrunableDim};
use squish_core::model::tensor_to_vec;
use squish_core::{Error, Result};

use crate::Importance;
use crate::net::Net;

/// Statistics gathered on calibration windows.
#[derive(Debug, Default, Clone)]
pub struct Calib {
    /// Per linear weight name: `Σ x_j²` of its input column j over all calibration tokens.
    pub input_sq: BTreeMap<String, Vec<f64>>,
    /// Per linear weight name: mean `|x_j|` of its input column j over the calibration tokens.
    pub input_abs: BTreeMap<String, Vec<f64>>,
    /// Per layer: mean top-k gate of every expert over the calibration tokens.
    pub expert_util: BTreeMap<usize, Vec<f64>>,
    /// Per weight name: `Σ |w·g|` (Taylor), when computed.
    pub taylor: BTreeMap<String, Vec<f64>>,
}

/// Runs the model over `windows` (batches of 8) and collects input norms and router statistics.
pub fn collect(net: &Net, w: &Weights, top_k: usize, windows: &[Vec<u32>]) -> Result<Calib> {
    let mut c = Calib::default();
    let mut router_in: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut abs_count: BTreeMap<String, usize> = BTreeMap::new();
    for group in windows.chunks(8) {
        let mut err = None;
        net.forward_captured(group, &mut |name, x| {
            let [b, t, d] = x.dims();
            let abs = x.clone().abs().sum_dim(0).sum_dim(1).reshape([d]); // [in]
            match tensor_to_vec(abs) {
                Ok(v) => {
                    let acc = c
                        .input_abs
                        .entry(name.to_string())
                        .or_insert_with(|| vec![0.0; d]);
                    acc.iter_mut().zip(v).for_each(|(a, x)| *a += x as f64);
                    *abs_count.entry(name.to_string()).or_default() += b * t;
                }
                Err(e) => err = Some(e),
            }
            let sq = x
                .clone()
                .powf_scalar(2.0)
                .sum_dim(0)
                .sum_dim(1)
                .reshape([d]); // [in]
            match tensor_to_vec(sq) {
                Ok(v) => {
                    let acc = c
                        .input_sq
                        .entry(name.to_string())
                        .or_insert_with(|| vec![0.0; d]);
                    acc.iter_mut().zip(v).for_each(|(a, x)| *a += x as f64);
                }
                Err(e) => err = Some(e),
            }
            if name.ends_with(".moe.router.weight") {
                match tensor_to_vec(x.clone().reshape([b * t, d])) {
                    Ok(v) => router_in.entry(name.to_string()).or_default().extend(v),
                    Err(e) => err = Some(e),
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
    }
    for (name, acc) in c.input_abs.iter_mut() {
        let n = abs_count.get(name).copied().unwrap_or(0).max(1) as f64;
        acc.iter_mut().for_each(|a| *a /= n);
    }
    for layer in 0.. {
        let name = router_name(layer);
        let Some(h) = router_in.get(&name) else { break };
        let r = w.get(&name)?;
        let (e, d) = (r.shape[0], r.shape[1]);
        let rw = r.to_f32();
        c.expert_util.insert(layer, gate_means(h, &rw, e, d, top_k));
    }
    Ok(c)
}

/// Mean renormalised top-k gate per expert for router inputs `h [n, d]` and router `r [e, d]`.
fn gate_means(h: &[f32], r: &[f32], e: usize, d: usize, top_k: usize) -> Vec<f64> {
    let k = top_k.min(e).max(1);
    let mut sum = vec![0.0f64; e];
    let n = h.len() / d.max(1);
    for row in h.chunks_exact(d) {
        let logits: Vec<f64> = (0..e)
            .map(|j| {
                row.iter()
                    .zip(&r[j * d..(j + 1) * d])
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum()
            })
            .collect();
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let p: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let mut sorted = p.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        let z: f64 = p.iter().filter(|&&x| x >= kth).sum();
        for j in 0..e {
            if p[j] >= kth {
                sum[j] += p[j] / z;
            }
        }
    }
    sum.iter().map(|s| s / n.max(1) as f64).collect()
}

/// Per-element scores of tensor `name` under `imp`.
fn element_scores(w: &Weights, name: &str, imp: Importance, calib: &Calib) -> Result<Vec<f64>> {
    let t = w.get(name)?;
    let v = t.to_f32();
    Ok(match imp {
        // Activation scores whole units (`activation_scores`); elements fall back to L1.
        Importance::MagnitudeL1 | Importance::Activation => {
            v.iter().map(|x| x.abs() as f64).collect()
        }
        Importance::MagnitudeL2 => v.iter().map(|x| (*x as f64).powi(2)).collect(),
        Importance::Wanda => match (calib.input_sq.get(name), t.shape.as_slice()) {
            (Some(sq), [_, cols]) if sq.len() == *cols => v
                .iter()
                .enumerate()
                .map(|(i, x)| x.abs() as f64 * sq[i % cols].sqrt())
                .collect(),
            _ => v.iter().map(|x| x.abs() as f64).collect(),
        },
        Importance::Taylor => match calib.taylor.get(name) {
            Some(s) if s.len() == v.len() => s.clone(),
            _ => {
                return Err(Error::tensor(
                    name,
                    "no Taylor statistics (calibration windows missing?)",
                ));
            }
        },
    })
}

/// Activation scores of `d`'s units: Σ over its input-column members (axis 1) with captured
/// inputs of the mean |x| of the unit's columns, each distinct input once (members reading the
/// same input have identical statistics). `None` when no member reads a captured input.
fn activation_scores(d: &PrunableDim, calib: &Calib) -> Option<Vec<f64>> {
    let mut seen: Vec<&Vec<f64>> = Vec::new();
    let mut sc = vec![0.0f64; d.units];
    for m in d.members.iter().filter(|m| m.axis == 1) {
        let Some(a) = calib.input_abs.get(&m.tensor) else {
            continue;
        };
        if seen.contains(&a) {
            continue;
        }
        seen.push(a);
        for (u, s) in sc.iter_mut().enumerate() {
            *s += m.indices(u).filter_map(|i| a.get(i)).sum::<f64>();
        }
    }
    (!seen.is_empty()).then_some(sc)
}

/// Scores `[dim][unit]` of every dimension of `s` (higher = more important).
pub fn unit_scores(
    w: &Weights,
    s: &ModelStructure,
    imp: Importance,
    calib: &Calib,
    utilisation: bool,
) -> Result<Vec<Vec<f64>>> {
    let mut cache: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut get = |name: &str| -> Result<Vec<f64>> {
        if let Some(v) = cache.get(name) {
            return Ok(v.clone());
        }
        let v = element_scores(w, name, imp, calib)?;
        cache.insert(name.to_string(), v.clone());
        Ok(v)
    };
    let mut out = Vec::with_capacity(s.dims.len());
    for d in &s.dims {
        let activation = match imp {
            Importance::Activation => activation_scores(d, calib),
            _ => None,
        };
        let mut sc = activation.clone().unwrap_or_else(|| vec![0.0f64; d.units]);
        for m in d.members.iter().filter(|_| activation.is_none()) {
            let e = get(&m.tensor)?;
            let shape = &w.get(&m.tensor)?.shape;
            let cols = if shape.len() == 2 { shape[1] } else { 1 };
            let rows = e.len() / cols.max(1);
            for (u, s) in sc.iter_mut().enumerate() {
                for idx in m.indices(u) {
                    *s += if m.axis == 0 {
                        e[idx * cols..(idx + 1) * cols].iter().sum::<f64>()
                    } else {
                        (0..rows).map(|r| e[r * cols + idx]).sum::<f64>()
                    };
                }
            }
        }
        let owned = d.unit_tensors.iter().enumerate();
        for (u, names) in owned.filter(|_| activation.is_none()) {
            for n in names {
                sc[u] += get(n)?.iter().sum::<f64>();
            }
        }
        if imp == Importance::MagnitudeL2 {
            sc.iter_mut().for_each(|x| *x = x.sqrt());
        }
        if utilisation
            && imp != Importance::Taylor
            && let Some(util) = calib.expert_util.get(&d.layer)
        {
            let mean = util.iter().sum::<f64>() / util.len().max(1) as f64;
            let norm = |e: usize| util.get(e).map_or(1.0, |u| u / mean.max(1e-12));
            match d.kind {
                DimKind::Experts => {
                    sc.iter_mut().enumerate().for_each(|(u, x)| *x *= norm(u));
                }
                DimKind::ExpertChannels => {
                    let f = norm(d.expert.unwrap_or(0));
                    sc.iter_mut().for_each(|x| *x *= f);
                }
                _ => {}
            }
        }
        out.push(sc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::model::structure::Member;

    fn member(tensor: &str, axis: usize) -> Member {
        Member {
            tensor: tensor.into(),
            axis,
            offset: 0,
            block: 1,
        }
    }

    /// Activation scores sum each distinct input once (members reading the same input, like
    /// wq/wk/wv, share identical statistics), ignore output rows, and are absent when nothing
    /// the dimension feeds was captured.
    #[test]
    fn activation_scores_count_each_input_once() {
        let mut d = PrunableDim {
            kind: DimKind::Residual,
            layer: 0,
            expert: None,
            name: "d_model".into(),
            units: 3,
            members: vec![
                member("a", 1),
                member("b", 1), // same input as `a`
                member("c", 1),
                member("o", 0), // an output row: no input statistics
            ],
            unit_tensors: Vec::new(),
            min_units: 1,
            parent: None,
        };
        let mut calib = Calib::default();
        calib.input_abs.insert("a".into(), vec![1.0, 2.0, 3.0]);
        calib.input_abs.insert("b".into(), vec![1.0, 2.0, 3.0]);
        calib.input_abs.insert("c".into(), vec![0.5, 0.0, 4.0]);
        calib.input_abs.insert("o".into(), vec![9.0, 9.0, 9.0]);
        assert_eq!(activation_scores(&d, &calib), Some(vec![1.5, 2.0, 7.0]));
        d.members.retain(|m| m.axis == 0);
        assert_eq!(activation_scores(&d, &calib), None);
    }
}
