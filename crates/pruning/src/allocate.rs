//! Allocation: which units of which dimensions to remove to reach a parameter budget.
//!
//! Every unit has an importance score (aggregated over its group's members) and a parameter
//! cost. `global` ranks all eligible units together by score per parameter, normalised by the
//! mean of their (kind, layer) bucket so layers of different scale compete fairly; `uniform`
//! removes the same fraction of every eligible dimension. Both respect a minimum width per
//! dimension; channel widths can be rounded to a multiple of `round_to`.

use std::collections::BTreeMap;

use squish_core::model::structure::{DimKind, ModelStructure};

/// The inputs of an allocation.
#[derive(Debug)]
pub struct Problem<'a> {
    /// The structure.
    pub structure: &'a ModelStructure,
    /// Scores `[dim][unit]` (higher = more important).
    pub scores: &'a [Vec<f64>],
    /// Cost per unit of each dim through its members.
    pub member_cost: &'a [usize],
    /// Cost of the whole tensors each unit owns `[dim][unit]`.
    pub unit_cost: &'a [Vec<usize>],
    /// Whether each dim may be pruned.
    pub eligible: &'a [bool],
    /// Minimum kept units per dim.
    pub min_keep: &'a [usize],
    /// Round kept channel widths to a multiple of this (0/1 = off).
    pub round_to: usize,
}

/// True for channel dimensions (rounded widths apply).
pub fn is_channel(kind: DimKind) -> bool {
    matches!(
        kind,
        DimKind::ExpertChannels | DimKind::SsmChannels | DimKind::FfnChannels | DimKind::Residual
    )
}

impl Problem<'_> {
    /// Parameters removed by `drop` (units of removed parents count once, at full size).
    pub fn removed(&self, drop: &[Vec<usize>]) -> usize {
        let dims = &self.structure.dims;
        let mut total = 0;
        for (d, units) in drop.iter().enumerate() {
            if dims[d].parent.is_some_and(|(p, u)| drop[p].contains(&u)) {
                continue;
            }
            total += units.len() * self.member_cost[d];
            total += units.iter().map(|&u| self.unit_cost[d][u]).sum::<usize>();
        }
        // Children of removed parents: their removal is inside the parent's full size, but any
        // channel removal counted above for a surviving parent is already in `total`.
        total
    }

    /// Units of `d` ordered from least to most important (ties by index).
    fn order(&self, d: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.scores[d].len()).collect();
        idx.sort_by(|&a, &b| {
            self.scores[d][a]
                .total_cmp(&self.scores[d][b])
                .then(a.cmp(&b))
        });
        idx
    }

    /// Rounds the kept width of channel dims to a multiple of `round_to`, re-selecting the
    /// dropped units as the least important ones.
    fn round(&self, drop: &mut [Vec<usize>]) {
        if self.round_to <= 1 {
            return;
        }
        let r = self.round_to;
        for (d, dim) in self.structure.dims.iter().enumerate() {
            if !self.eligible[d] || !is_channel(dim.kind) || drop[d].is_empty() {
                continue;
            }
            let n = dim.units;
            let kept = n - drop[d].len();
            let mut k = ((kept + r / 2) / r * r).max(r.min(n)).min(n);
            if k < self.min_keep[d] {
                k = self.min_keep[d].div_ceil(r) * r;
            }
            let k = k.min(n);
            let mut v: Vec<usize> = self.order(d)[..n - k].to_vec();
            v.sort_unstable();
            drop[d] = v;
        }
    }

    /// Global ranking (see the module docs). Returns `drop[dim]`, sorted.
    pub fn global(&self, target: usize) -> Vec<Vec<usize>> {
        let dims = &self.structure.dims;
        let n = dims.len();
        // Density = score / cost, normalised by the mean density of the (kind, layer) bucket.
        let cost = |d: usize, u: usize| (self.member_cost[d] + self.unit_cost[d][u]).max(1) as f64;
        let mut bucket: BTreeMap<(DimKind, usize), (f64, usize)> = BTreeMap::new();
        for d in (0..n).filter(|&d| self.eligible[d]) {
            let b = bucket.entry((dims[d].kind, dims[d].layer)).or_default();
            for u in 0..dims[d].units {
                b.0 += self.scores[d][u] / cost(d, u);
                b.1 += 1;
            }
        }
        let mut cand: Vec<(f64, usize, usize)> = Vec::new();
        for d in (0..n).filter(|&d| self.eligible[d]) {
            let (sum, cnt) = bucket[&(dims[d].kind, dims[d].layer)];
            let mean = sum / cnt.max(1) as f64;
            for u in 0..dims[d].units {
                let dens = self.scores[d][u] / cost(d, u);
                let norm = if mean > 0.0 { dens / mean } else { dens };
                cand.push((norm, d, u));
            }
        }
        cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut drop: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut removed = 0usize;
        for &(_, d, u) in &cand {
            if removed >= target {
                break;
            }
            if dims[d].units - drop[d].len() <= self.min_keep[d] {
                continue;
            }
            if dims[d].parent.is_some_and(|(p, pu)| drop[p].contains(&pu)) {
                continue;
            }
            let mut gain = self.member_cost[d] + self.unit_cost[d][u];
            // Removing a parent unit: subtract what its children already removed.
            for (c, cd) in dims.iter().enumerate() {
                if cd.parent == Some((d, u)) {
                    gain -= (drop[c].len() * self.member_cost[c]).min(gain);
                }
            }
            drop[d].push(u);
            removed += gain;
        }
        for v in &mut drop {
            v.sort_unstable();
        }
        self.round(&mut drop);
        drop
    }

    /// The plan removing fraction `f` of every eligible dimension's units.
    fn uniform_at(&self, f: f64) -> Vec<Vec<usize>> {
        let dims = &self.structure.dims;
        let mut drop: Vec<Vec<usize>> = vec![Vec::new(); dims.len()];
        for (d, dim) in dims.iter().enumerate() {
            if !self.eligible[d] {
                continue;
            }
            let k = ((f * dim.units as f64).round() as usize)
                .min(dim.units.saturating_sub(self.min_keep[d]));
            let mut v = self.order(d)[..k].to_vec();
            v.sort_unstable();
            drop[d] = v;
        }
        self.round(&mut drop);
        drop
    }

    /// Uniform per-dimension fraction, the smallest reaching `target` (bisection on the fraction).
    pub fn uniform(&self, target: usize) -> Vec<Vec<usize>> {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        if self.removed(&self.uniform_at(hi)) < target {
            return self.uniform_at(hi);
        }
        for _ in 0..40 {
            let mid = 0.5 * (lo + hi);
            if self.removed(&self.uniform_at(mid)) >= target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.uniform_at(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::model::structure::{Member, PrunableDim};

    fn dim(layer: usize, units: usize) -> PrunableDim {
        PrunableDim {
            kind: DimKind::FfnChannels,
            layer,
            expert: None,
            name: format!("d{layer}"),
            units,
            members: vec![Member {
                tensor: format!("t{layer}"),
                axis: 0,
                offset: 0,
                block: 1,
            }],
            unit_tensors: Vec::new(),
            min_units: 1,
            parent: None,
        }
    }

    fn problem<'a>(
        s: &'a ModelStructure,
        scores: &'a [Vec<f64>],
        min_keep: &'a [usize],
        unit_cost: &'a [Vec<usize>],
        round_to: usize,
    ) -> Problem<'a> {
        Problem {
            structure: s,
            scores,
            member_cost: &[10, 10],
            unit_cost,
            eligible: &[true, true],
            min_keep,
            round_to,
        }
    }

    #[test]
    fn global_takes_least_important_and_respects_minimum() {
        let s = ModelStructure {
            dims: vec![dim(0, 8), dim(1, 8)],
            unprunable: vec![],
            embedding: vec![],
        };
        // Layer 0 has one clearly useless unit (relative to its layer's mean).
        let scores = vec![
            vec![0.01, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vec![5.0, 4.0, 6.0, 5.0, 5.0, 5.0, 5.0, 5.0],
        ];
        let zero = vec![vec![0; 8], vec![0; 8]];
        let p = problem(&s, &scores, &[2, 2], &zero, 0);
        let drop = p.global(10);
        assert_eq!(drop, vec![vec![0], vec![]]);
        let drop = p.global(1000);
        assert_eq!(drop[0].len(), 6);
        assert_eq!(drop[1].len(), 6);
        assert_eq!(p.removed(&drop), 120);
    }

    #[test]
    fn uniform_and_rounding() {
        let s = ModelStructure {
            dims: vec![dim(0, 8), dim(1, 8)],
            unprunable: vec![],
            embedding: vec![],
        };
        let scores = vec![
            (0..8).map(f64::from).collect(),
            (0..8).rev().map(f64::from).collect(),
        ];
        let zero = vec![vec![0; 8], vec![0; 8]];
        let p = problem(&s, &scores, &[1, 1], &zero, 0);
        let drop = p.uniform(40);
        assert_eq!(drop, vec![vec![0, 1], vec![6, 7]]);
        let p = problem(&s, &scores, &[1, 1], &zero, 4);
        let drop = p.uniform(50);
        assert!(drop.iter().all(|d| (8 - d.len()) % 4 == 0), "{drop:?}");
    }
}
