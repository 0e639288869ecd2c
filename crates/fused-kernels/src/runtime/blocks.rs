//! Building blocks both families share: the SwiGLU FFN (gate/up stacked when their formats
//! match) and the head (embedding lookup, final norm, classifier).

use squish_core::checkpoint::Weights;
use squish_core::{Error, Result};

use super::{Exec, Logits, Split, load};
use crate::pack::PackedWeight;
use crate::scratch::{RmsNorm, Scratch};

/// A SwiGLU FFN `W2 (silu(W1 x) ⊙ W3 x)`; gate/up stacked into one weight when W1/W3 share a
/// format.
#[derive(Debug)]
pub(crate) struct SwiGlu {
    /// Gate (`w1`) and up (`w3`) projections.
    gate_up: GateUp,
    /// `[d, hidden]`.
    pub w2: PackedWeight,
    /// Hidden width (per layer / per expert).
    pub hidden: usize,
}

/// How a SwiGLU's gate and up projections are stored.
#[derive(Debug)]
enum GateUp {
    /// `w1 ‖ w3` stacked row-wise, `[2·hidden, d]`: one matmul (one activation staging, one
    /// kernel call) gives each token's gate then up values.
    Stacked(PackedWeight),
    /// Formats differ (mixed precision): `w1`, `w3` `[hidden, d]` each.
    Pair(PackedWeight, PackedWeight),
}

impl SwiGlu {
    /// Loads `w1`, `w2`, `w3` named by `names` for model width `d`.
    pub fn load(w: &Weights, names: [&str; 3], d: usize) -> Result<Self> {
        let hidden = load::dim0(w, names[0])?;
        let w2 = load::matrix(w, names[1], d, hidden)?;
        let parts = [
            (names[0].to_string(), hidden),
            (names[2].to_string(), hidden),
        ];
        let gate_up = match load::stacked(w, &parts, d)? {
            load::Stacked::Fused(gu) => GateUp::Stacked(gu),
            load::Stacked::Split(mut ws) => {
                let w3 = ws.pop().expect("two parts");
                let w1 = ws.pop().expect("two parts");
                GateUp::Pair(w1, w3)
            }
        };
        Ok(SwiGlu {
            gate_up,
            w2,
            hidden,
        })
    }

    /// Grows `s` so that [`SwiGlu::up`] never allocates for up to `n` tokens (both forms keep
    /// their gate and up values in `s.tmp`).
    pub fn reserve(&self, s: &mut Scratch, n: usize) {
        if s.tmp.len() < 2 * n * self.hidden {
            s.tmp.resize(2 * n * self.hidden, 0.0);
        }
    }

    /// `hid [n, hidden] = silu(W1 x) ⊙ (W3 x)` for `x [n, d]` (optionally normed); `split`
    /// says whether the matmuls may use the pool.
    #[allow(clippy::too_many_arguments)]
    pub fn up(
        &self,
        ex: &Exec,
        split: Split,
        x: &[f32],
        n: usize,
        hid: &mut [f32],
        s: &mut Scratch,
        norm: Option<RmsNorm<'_>>,
    ) -> Result<()> {
        let h = self.hidden;
        let swiglu = |o: &mut [f32], g: &[f32], u: &[f32]| {
            ex.ops
                .swiglu(o, g, u)
                .map_err(|e| Error::invalid(e.to_string()))
        };
        let mut tmp = std::mem::take(&mut s.tmp);
        if tmp.len() < 2 * n * h {
            tmp.resize(2 * n * h, 0.0);
        }
        let r = match &self.gate_up {
            GateUp::Stacked(gu) => {
                let d = gu.inp();
                // [n, 2·hidden]: token t's gate values, then its up values.
                let r = ex.mm_split(split, gu, &x[..n * d], n, &mut tmp[..2 * n * h], s, norm);
                r.and_then(|()| {
                    for (o, gu_t) in hid[..n * h]
                        .chunks_exact_mut(h)
                        .zip(tmp.chunks_exact(2 * h))
                    {
                        let (g, u) = gu_t.split_at(h);
                        swiglu(o, g, u)?;
                    }
                    Ok(())
                })
            }
            GateUp::Pair(w1, w3) => {
                let d = w1.inp();
                // [n, hidden] gate values, then [n, hidden] up values.
                let (g, u) = tmp[..2 * n * h].split_at_mut(n * h);
                let xs = &x[..n * d];
                // Int8 activations: staged once for both when their layouts agree.
                let r = match ex.stage_shared(split, [w1, w3], xs, n, s, norm) {
                    Ok(Some(sh)) => sh
                        .run(w1, g, h)
                        .and_then(|()| sh.run(w3, u, h))
                        .map_err(|e| Error::invalid(format!("matmul: {e}"))),
                    Ok(None) => ex
                        .mm_split(split, w1, xs, n, g, s, norm)
                        .and_then(|()| ex.mm_split(split, w3, xs, n, u, s, norm)),
                    Err(e) => Err(e),
                };
                r.and_then(|()| swiglu(&mut hid[..n * h], g, u))
            }
        };
        s.tmp = tmp;
        r
    }

    /// The weights, for scratch sizing and prefetching (no allocation: called per token).
    pub fn weights(&self) -> impl Iterator<Item = &PackedWeight> {
        let (first, second) = match &self.gate_up {
            GateUp::Stacked(gu) => (gu, None),
            GateUp::Pair(w1, w3) => (w1, Some(w3)),
        };
        std::iter::once(first)
            .chain(second)
            .chain(std::iter::once(&self.w2))
    }
}

/// Token embedding (F32 copy for lookups) and the classifier with its final norm.
#[derive(Debug)]
pub(crate) struct Head {
    /// `[vocab, d]` dequantized embedding rows.
    emb: Vec<f32>,
    /// `[vocab, d]` classifier (the embedding itself when tied).
    pub cls: PackedWeight,
    /// `[d]` final RMSNorm gain.
    norm: Vec<f32>,
    eps: f32,
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub d: usize,
}

impl Head {
    /// Loads the embedding, the final norm and the classifier (`None` = tied).
    pub fn load(w: &Weights, vocab: usize, d: usize, eps: f32, cls: Option<&str>) -> Result<Self> {
        let emb_name = "tok_embeddings.weight";
        let emb = load::tensor(w, emb_name, &[vocab, d])?.to_f32();
        let cls = load::matrix(w, cls.unwrap_or(emb_name), vocab, d)?;
        let norm = load::vector(w, "norm.weight", &[d])?;
        Ok(Head {
            emb,
            cls,
            norm,
            eps,
            vocab,
            d,
        })
    }

    /// `x [n, d]` = embedding rows of `tokens` (ids checked).
    pub fn embed(&self, tokens: &[u32], x: &mut [f32]) -> Result<()> {
        let d = self.d;
        for (t, &id) in tokens.iter().enumerate() {
            let id = id as usize;
            if id >= self.vocab {
                return Err(Error::invalid(format!(
                    "token id {id} outside vocabulary of {}",
                    self.vocab
                )));
            }
            x[t * d..(t + 1) * d].copy_from_slice(&self.emb[id * d..(id + 1) * d]);
        }
        Ok(())
    }

    /// Final norm + classifier for the rows of `x [n, d]` that `out` asks for.
    pub fn logits(
        &self,
        ex: &Exec,
        x: &[f32],
        n: usize,
        out: Logits<'_>,
        s: &mut Scratch,
    ) -> Result<()> {
        let d = self.d;
        let norm = Some(RmsNorm {
            weight: &self.norm,
            eps: self.eps,
        });
        match out {
            Logits::None => Ok(()),
            Logits::Last(l) => ex.mm(&self.cls, &x[(n - 1) * d..n * d], 1, l, s, norm),
            Logits::All(a) => ex.mm(&self.cls, x, n, a, s, norm),
        }
    }
}
