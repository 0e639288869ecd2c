//! The structural description of a model: which tensor slices share a prunable dimension.
//!
//! A [`PrunableDim`] is one dimension of the network that can be narrowed (an expert's hidden
//! width, a layer's set of experts, an SSM's `d_inner`, an FFN's hidden width, a layer's kv heads).
//! Removing unit `u` of it removes, in every [`Member`], the indices
//! `offset + u·block .. offset + (u+1)·block` along `axis`, and deletes the whole tensors listed in
//! `unit_tensors[u]` (later units' tensors are renamed down). Every tensor the model stores is
//! either touched by some dimension or declared unprunable, which [`ModelStructure::check_coverage`]
//! verifies. Structured pruning derives its dependency groups from this description alone.
//!
//! Every model has one [`DimKind::Residual`] dimension (its `d_model`), listed last; the
//! residual width of a checkpoint is read from the embedding's shape ([`residual_width`]), not
//! from the configuration.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::llama_names::layer_tensor_names;
use super::ssm_moe_weights::{expert_name, experts_in_layer, router_name, ssm_name};
use crate::checkpoint::Weights;
use crate::config::{LlamaConfig, ModelConfig, SsmMoeConfig};
use crate::{Error, Result};

/// What a prunable dimension is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DimKind {
    /// Hidden channels of one MoE expert (w1/w3 rows, w2 cols).
    ExpertChannels,
    /// The experts of one MoE layer (router row + the expert's three tensors).
    Experts,
    /// SSM `d_inner` channels of one layer.
    SsmChannels,
    /// Llama FFN hidden channels of one layer (w1/w3 rows, w2 cols).
    FfnChannels,
    /// Llama kv heads of one layer, each with the query heads that read it (GQA).
    KvHeads,
    /// Residual-stream channels (`d_model`) of the whole model: the embedding (and untied
    /// classifier) column, every RMSNorm gain, every projection's input column reading the
    /// residual stream and output row writing it. `layer` is 0.
    Residual,
}

/// One tensor slice that moves with a prunable dimension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Tensor name.
    pub tensor: String,
    /// Axis of the tensor the dimension runs along.
    pub axis: usize,
    /// First index of unit 0 along `axis`.
    pub offset: usize,
    /// Indices per unit (1 for channels, the head width for heads).
    pub block: usize,
}

impl Member {
    /// Indices along `axis` that unit `u` occupies.
    pub fn indices(&self, u: usize) -> Range<usize> {
        self.offset + u * self.block..self.offset + (u + 1) * self.block
    }
}

/// A dimension that can be narrowed, with every tensor slice that depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunableDim {
    /// What it is.
    pub kind: DimKind,
    /// Block index.
    pub layer: usize,
    /// Expert index, for [`DimKind::ExpertChannels`].
    pub expert: Option<usize>,
    /// Readable name (`layers.0.moe.experts.1.hidden`).
    pub name: String,
    /// Current number of units.
    pub units: usize,
    /// Slices removed with each unit.
    pub members: Vec<Member>,
    /// Whole tensors owned by each unit (`[units][..]`); empty for channel/head dimensions.
    pub unit_tensors: Vec<Vec<String>>,
    /// Structural minimum of units (e.g. `top_k` experts, one head).
    pub min_units: usize,
    /// `(index into ModelStructure::dims, unit)` of the unit this dimension lives inside, if any
    /// (an expert's channels live inside that expert).
    pub parent: Option<(usize, usize)>,
}

/// The prunable dimensions of a model and the tensors declared unprunable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStructure {
    /// Prunable dimensions.
    pub dims: Vec<PrunableDim>,
    /// Tensors no dimension may change (none in the current families: embeddings and norms
    /// belong to the residual dimension).
    pub unprunable: Vec<String>,
    /// The embedding/classifier tensors (excluded from "non-embedding" parameter counts).
    pub embedding: Vec<String>,
}

fn rows(w: &Weights, name: &str) -> Result<usize> {
    w.get(name)?
        .shape
        .first()
        .copied()
        .ok_or_else(|| Error::tensor(name, "empty shape"))
}

fn m(tensor: String, axis: usize, offset: usize, block: usize) -> Member {
    Member {
        tensor,
        axis,
        offset,
        block,
    }
}

/// The residual width (`d_model`) of a checkpoint: the columns of `tok_embeddings.weight`,
/// which must have `vocab` rows. Width pruning changes it; the configuration keeps the nominal
/// width (as it keeps the nominal `d_inner` and expert widths).
pub fn residual_width(w: &Weights, vocab: usize) -> Result<usize> {
    let name = "tok_embeddings.weight";
    match w.get(name)?.shape.as_slice() {
        [v, d] if *v == vocab && *d > 0 => Ok(*d),
        shape => Err(Error::tensor(
            name,
            format!("shape {shape:?}, expected [{vocab}, d_model > 0]"),
        )),
    }
}

/// The residual dimension over `members` (`(tensor, axis)`), `d` channels wide.
fn residual_dim(members: Vec<(String, usize)>, d: usize) -> PrunableDim {
    PrunableDim {
        kind: DimKind::Residual,
        layer: 0,
        expert: None,
        name: "d_model".into(),
        units: d,
        members: members.into_iter().map(|(t, a)| m(t, a, 0, 1)).collect(),
        unit_tensors: Vec::new(),
        min_units: 1,
        parent: None,
    }
}

/// Describes the prunable structure of a model with configuration `config` and weights `w`
/// (current widths are read from the tensor shapes).
pub fn describe(config: &ModelConfig, w: &Weights) -> Result<ModelStructure> {
    match config {
        ModelConfig::SsmMoe(c) => describe_ssm_moe(c, w),
        ModelConfig::Llama(c) => describe_llama(c, w),
    }
}

fn describe_ssm_moe(c: &SsmMoeConfig, w: &Weights) -> Result<ModelStructure> {
    let mut dims = Vec::new();
    let d_model = residual_width(w, c.vocab_size)?;
    let mut resid = vec![("tok_embeddings.weight".to_string(), 1)];
    for i in 0..c.n_layers {
        resid.push((format!("layers.{i}.ssm_norm.weight"), 0));
        resid.push((ssm_name(i, "in_proj.weight"), 1)); // reads the residual stream
        resid.push((ssm_name(i, "out_proj.weight"), 0)); // writes it
        resid.push((format!("layers.{i}.moe_norm.weight"), 0));
        resid.push((router_name(i), 1));
        let di = rows(w, &ssm_name(i, "D"))?;
        let s = |p: &str| ssm_name(i, p);
        dims.push(PrunableDim {
            kind: DimKind::SsmChannels,
            layer: i,
            expert: None,
            name: format!("layers.{i}.ssm.d_inner"),
            units: di,
            members: vec![
                m(s("in_proj.weight"), 0, 0, 1),  // x rows
                m(s("in_proj.weight"), 0, di, 1), // z rows
                m(s("conv.weight"), 0, 0, 1),
                m(s("conv.bias"), 0, 0, 1),
                m(s("x_proj.weight"), 1, 0, 1),
                m(s("dt_proj.weight"), 0, 0, 1),
                m(s("dt_proj.bias"), 0, 0, 1),
                m(s("A_log"), 0, 0, 1),
                m(s("D"), 0, 0, 1),
                m(s("out_proj.weight"), 1, 0, 1),
            ],
            unit_tensors: Vec::new(),
            min_units: 1,
            parent: None,
        });
        let n_exp = experts_in_layer(w, i);
        for e in 0..n_exp {
            resid.push((expert_name(i, e, "w1"), 1));
            resid.push((expert_name(i, e, "w3"), 1));
            resid.push((expert_name(i, e, "w2"), 0));
        }
        let experts_idx = dims.len();
        dims.push(PrunableDim {
            kind: DimKind::Experts,
            layer: i,
            expert: None,
            name: format!("layers.{i}.moe.experts"),
            units: n_exp,
            members: vec![m(router_name(i), 0, 0, 1)],
            unit_tensors: (0..n_exp)
                .map(|e| ["w1", "w2", "w3"].map(|x| expert_name(i, e, x)).to_vec())
                .collect(),
            min_units: c.top_k.min(n_exp).max(1),
            parent: None,
        });
        for e in 0..n_exp {
            dims.push(PrunableDim {
                kind: DimKind::ExpertChannels,
                layer: i,
                expert: Some(e),
                name: format!("layers.{i}.moe.experts.{e}.hidden"),
                units: rows(w, &expert_name(i, e, "w1"))?,
                members: vec![
                    m(expert_name(i, e, "w1"), 0, 0, 1),
                    m(expert_name(i, e, "w3"), 0, 0, 1),
                    m(expert_name(i, e, "w2"), 1, 0, 1),
                ],
                unit_tensors: Vec::new(),
                min_units: 1,
                parent: Some((experts_idx, e)),
            });
        }
    }
    resid.push(("norm.weight".into(), 0));
    dims.push(residual_dim(resid, d_model));
    Ok(ModelStructure {
        dims,
        unprunable: Vec::new(),
        embedding: vec!["tok_embeddings.weight".into()],
    })
}

fn describe_llama(c: &LlamaConfig, w: &Weights) -> Result<ModelStructure> {
    let hs = c.head_size();
    let rep = c.n_heads / c.n_kv_heads;
    let mut dims = Vec::new();
    let d_model = residual_width(w, c.vocab_size)?;
    let mut resid = vec![("tok_embeddings.weight".to_string(), 1)];
    let mut embedding = vec!["tok_embeddings.weight".to_string()];
    if !c.shared_classifier {
        resid.push(("output.weight".into(), 1));
        embedding.push("output.weight".into());
    }
    for i in 0..c.n_layers {
        let n = layer_tensor_names(i);
        // Norm gains; wq/wk/wv and w1/w3 read the residual stream, wo and w2 write it.
        for (t, axis) in [
            (0, 0),
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 0),
            (5, 0),
            (6, 1),
            (8, 1),
            (7, 0),
        ] {
            resid.push((n[t].clone(), axis));
        }
        let kv_rows = rows(w, &n[2])?;
        if kv_rows % hs != 0 {
            return Err(Error::tensor(
                &n[2],
                format!("{kv_rows} rows is not a multiple of the head size {hs}"),
            ));
        }
        dims.push(PrunableDim {
            kind: DimKind::KvHeads,
            layer: i,
            expert: None,
            name: format!("layers.{i}.attention.kv_heads"),
            units: kv_rows / hs,
            members: vec![
                m(n[1].clone(), 0, 0, rep * hs), // wq rows of the query heads reading this kv head
                m(n[2].clone(), 0, 0, hs),
                m(n[3].clone(), 0, 0, hs),
                m(n[4].clone(), 1, 0, rep * hs), // wo cols of those query heads
            ],
            unit_tensors: Vec::new(),
            min_units: 1,
            parent: None,
        });
        dims.push(PrunableDim {
            kind: DimKind::FfnChannels,
            layer: i,
            expert: None,
            name: format!("layers.{i}.feed_forward.hidden"),
            units: rows(w, &n[6])?,
            members: vec![
                m(n[6].clone(), 0, 0, 1),
                m(n[8].clone(), 0, 0, 1),
                m(n[7].clone(), 1, 0, 1),
            ],
            unit_tensors: Vec::new(),
            min_units: 1,
            parent: None,
        });
    }
    resid.push(("norm.weight".into(), 0));
    dims.push(residual_dim(resid, d_model));
    Ok(ModelStructure {
        dims,
        unprunable: Vec::new(),
        embedding,
    })
}

impl ModelStructure {
    /// Checks that every tensor of `w` is touched by a dimension or declared unprunable, that
    /// every named tensor exists, and that each member's slices fit its tensor's shape.
    pub fn check_coverage(&self, w: &Weights) -> Result<()> {
        let mut covered: BTreeSet<&str> = self.unprunable.iter().map(String::as_str).collect();
        for d in &self.dims {
            for mem in &d.members {
                let t = w.get(&mem.tensor)?;
                let len = t.shape.get(mem.axis).copied().ok_or_else(|| {
                    Error::tensor(&mem.tensor, format!("has no axis {}", mem.axis))
                })?;
                if mem.indices(d.units).start > len {
                    return Err(Error::tensor(
                        &mem.tensor,
                        format!(
                            "{}: {} units of {} at offset {} exceed axis {} of length {len}",
                            d.name, d.units, mem.block, mem.offset, mem.axis
                        ),
                    ));
                }
                covered.insert(&mem.tensor);
            }
            for name in d.unit_tensors.iter().flatten() {
                w.get(name)?;
                covered.insert(name);
            }
        }
        for name in &self.unprunable {
            w.get(name)?;
        }
        match w.iter().find(|(n, _)| !covered.contains(n.as_str())) {
            Some((n, _)) => Err(Error::tensor(
                n,
                "not covered by any prunable dimension nor declared unprunable",
            )),
            None => Ok(()),
        }
    }
}
