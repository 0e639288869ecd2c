//! Applying a pruning plan to [`Weights`]: physically removing (or, for tests, zeroing) the units
//! of the dependency groups that [`squish_core::model::structure`] describes.
//!
//! Removing residual (`d_model`) channels is not the same as zeroing them: every RMSNorm then
//! averages the square over d' = d − removed channels instead of d, which scales every kept
//! channel's normalised value by about √(d'/d) (exactly, when ε is negligible against the mean
//! square). [`rescale_norms`] undoes that exactly: gains × √(d/d') and ε × d/d'.

use std::collections::BTreeMap;

use squish_core::checkpoint::{WeightTensor, Weights};
use squish_core::config::ModelConfig;
use squish_core::model::structure::{DimKind, ModelStructure, PrunableDim};
use squish_core::{Error, Result};

/// Parameters one unit of `d` removes through its members (not counting `unit_tensors`), except
/// those in the tensors named in `exclude` (the embedding, for non-embedding budgets).
pub fn member_unit_params(w: &Weights, d: &PrunableDim, exclude: &[String]) -> Result<usize> {
    let mut total = 0;
    for m in d.members.iter().filter(|m| !exclude.contains(&m.tensor)) {
        let t = w.get(&m.tensor)?;
        let len = t.shape.get(m.axis).copied().unwrap_or(0).max(1);
        total += t.numel() / len * m.block;
    }
    Ok(total)
}

/// Parameters of the whole tensors owned by unit `u` of `d`.
pub fn unit_tensor_params(w: &Weights, d: &PrunableDim, u: usize) -> Result<usize> {
    let mut total = 0;
    for name in d.unit_tensors.get(u).into_iter().flatten() {
        total += w.get(name)?.numel();
    }
    Ok(total)
}

/// Parameters of the embedding/classifier tensors.
pub fn embedding_params(w: &Weights, s: &ModelStructure) -> Result<usize> {
    s.embedding
        .iter()
        .map(|n| w.get(n).map(WeightTensor::numel))
        .sum()
}

/// Dropped indices per (tensor, axis) for dropping units `drop` of `d`.
fn dropped_indices(d: &PrunableDim, drop: &[usize]) -> BTreeMap<(String, usize), Vec<usize>> {
    let mut out: BTreeMap<(String, usize), Vec<usize>> = BTreeMap::new();
    for m in &d.members {
        let v = out.entry((m.tensor.clone(), m.axis)).or_default();
        for &u in drop {
            v.extend(m.indices(u));
        }
    }
    for v in out.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    out
}

/// `t` without the indices `drop` (sorted) along `axis` (1-D or 2-D tensors); F32 out.
fn remove_along(name: &str, t: &WeightTensor, axis: usize, drop: &[usize]) -> Result<WeightTensor> {
    let v = t.to_f32();
    match (t.shape.as_slice(), axis) {
        ([n], 0) => {
            let keep: Vec<f32> = (0..*n)
                .filter(|i| drop.binary_search(i).is_err())
                .map(|i| v[i])
                .collect();
            WeightTensor::f32(vec![keep.len()], keep)
        }
        ([r, c], 0) => {
            let rows: Vec<usize> = (0..*r).filter(|i| drop.binary_search(i).is_err()).collect();
            let mut out = Vec::with_capacity(rows.len() * c);
            for &i in &rows {
                out.extend_from_slice(&v[i * c..(i + 1) * c]);
            }
            WeightTensor::f32(vec![rows.len(), *c], out)
        }
        ([r, c], 1) => {
            let cols: Vec<usize> = (0..*c).filter(|j| drop.binary_search(j).is_err()).collect();
            let mut out = Vec::with_capacity(r * cols.len());
            for i in 0..*r {
                out.extend(cols.iter().map(|&j| v[i * c + j]));
            }
            WeightTensor::f32(vec![*r, cols.len()], out)
        }
        (shape, _) => Err(Error::tensor(
            name,
            format!("cannot prune axis {axis} of a tensor with shape {shape:?}"),
        )),
    }
}

fn check_units(d: &PrunableDim, units: &[usize]) -> Result<()> {
    match units.iter().find(|&&u| u >= d.units) {
        Some(u) => Err(Error::invalid(format!(
            "{}: unit {u} out of range 0..{}",
            d.name, d.units
        ))),
        None => Ok(()),
    }
}

/// Physically removes units `drop` of `d` from `w`: member slices are cut out; whole tensors
/// owned by dropped units are deleted and later units' tensors renamed down.
pub fn remove_units(w: &mut Weights, d: &PrunableDim, drop: &[usize]) -> Result<()> {
    check_units(d, drop)?;
    for ((name, axis), idx) in dropped_indices(d, drop) {
        let t = remove_along(&name, w.get(&name)?, axis, &idx)?;
        w.insert(name, t);
    }
    if !d.unit_tensors.is_empty() {
        let kept: Vec<usize> = (0..d.units).filter(|u| !drop.contains(u)).collect();
        let mut moved = Vec::new();
        for (slot, &u) in kept.iter().enumerate() {
            for (j, name) in d.unit_tensors[u].iter().enumerate() {
                let t = w
                    .remove(name)
                    .ok_or_else(|| Error::tensor(name, "missing from checkpoint"))?;
                moved.push((d.unit_tensors[slot][j].clone(), t));
            }
        }
        for name in d.unit_tensors.iter().flatten() {
            w.remove(name);
        }
        for (name, t) in moved {
            w.insert(name, t);
        }
    }
    Ok(())
}

/// Sets the slices of units `drop` of `d` to zero (shapes unchanged). Only for channel and head
/// dimensions: zeroing a whole expert is not equivalent to removing it (the router would still
/// route to it).
pub fn zero_units(w: &mut Weights, d: &PrunableDim, drop: &[usize]) -> Result<()> {
    check_units(d, drop)?;
    if d.kind == DimKind::Experts {
        return Err(Error::invalid(format!(
            "{}: zeroing whole experts is not equivalent to removing them",
            d.name
        )));
    }
    for ((name, axis), idx) in dropped_indices(d, drop) {
        let t = w.get(&name)?;
        let mut v = t.to_f32();
        let shape = t.shape.clone();
        let cols = if shape.len() == 2 { shape[1] } else { 1 };
        for (i, x) in v.iter_mut().enumerate() {
            let pos = if axis == 0 { i / cols } else { i % cols };
            if idx.binary_search(&pos).is_ok() {
                *x = 0.0;
            }
        }
        w.insert(name, WeightTensor::f32(shape, v)?);
    }
    Ok(())
}

/// Applies a whole plan (`drop[d]` = units of `s.dims[d]` to remove): channel/head dimensions
/// first, then whole experts (whose tensors are renamed), so every name stays valid.
pub fn apply_plan(w: &mut Weights, s: &ModelStructure, drop: &[Vec<usize>]) -> Result<()> {
    if drop.len() != s.dims.len() {
        return Err(Error::invalid("pruning plan does not match the structure"));
    }
    for pass_experts in [false, true] {
        for (d, units) in s.dims.iter().zip(drop) {
            if (d.kind == DimKind::Experts) != pass_experts || units.is_empty() {
                continue;
            }
            if d.parent.is_some_and(|(p, u)| drop[p].contains(&u)) {
                continue; // lives inside a removed unit
            }
            remove_units(w, d, units)?;
        }
    }
    Ok(())
}

/// Makes the RMSNorms of a model whose residual width went from `from` to `to` channels compute
/// what they computed with the removed channels present and zero: with `S = Σ x²` over the kept
/// channels, `g·x/√(S/from + ε) = (g·√(from/to))·x/√(S/to + ε·from/to)`. The norm gains are the
/// 1-D members of `s`'s residual dimension (names are unchanged by width pruning); `config`'s ε
/// is rescaled. Identity when `from == to`.
pub fn rescale_norms(
    config: &mut ModelConfig,
    w: &mut Weights,
    s: &ModelStructure,
    from: usize,
    to: usize,
) -> Result<()> {
    if to == 0 || to > from {
        return Err(Error::invalid(format!(
            "rescale_norms: width {from} → {to} is not a reduction"
        )));
    }
    if to == from {
        return Ok(());
    }
    let resid = s
        .dims
        .iter()
        .find(|d| d.kind == DimKind::Residual)
        .ok_or_else(|| Error::invalid("rescale_norms: the structure has no residual dimension"))?;
    let ratio = from as f64 / to as f64;
    let gain = ratio.sqrt() as f32;
    for m in &resid.members {
        let t = w.get(&m.tensor)?;
        if t.shape.len() != 1 {
            continue;
        }
        let v: Vec<f32> = t.to_f32().iter().map(|x| x * gain).collect();
        let shape = t.shape.clone();
        w.insert(m.tensor.clone(), WeightTensor::f32(shape, v)?);
    }
    config.set_norm_eps((config.norm_eps() as f64 * ratio) as f32);
    Ok(())
}
