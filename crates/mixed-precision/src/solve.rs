//! The allocation: a multiple-choice knapsack solved exactly by dynamic programming over bytes.
//!
//! Every item (tensor) takes exactly one of its options `(bytes, loss)`. Bytes are counted above
//! each item's cheapest option and divided by the greatest common divisor of all those extra
//! costs, so the DP over byte units is exact. Only if the table would exceed the configured size
//! does the unit grow; costs are then rounded *up* (every answer still fits its budget, but may
//! miss the optimum by less than one unit per item) and [`Knapsack::exact`] is false.
//!
//! The DP's last row is the whole Pareto frontier at once: `best[b]` is the least total loss of
//! any assignment with extra cost ≤ `b` units; [`Knapsack::solve_bytes`] answers "least loss under
//! N bytes" and [`Knapsack::solve_max_loss`] the dual "fewest bytes with loss ≤ X".

use squish_core::{Error, Result};

/// One option of an item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Bytes this option adds.
    pub bytes: u64,
    /// Predicted loss of this option (additive across items).
    pub loss: f64,
}

/// An assignment: one option per item.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// Index of the chosen option of each item.
    pub picks: Vec<usize>,
    /// Exact total bytes.
    pub bytes: u64,
    /// Exact total loss.
    pub loss: f64,
}

/// A solved multiple-choice knapsack (the DP table, kept for backtracking).
#[derive(Debug, Clone)]
pub struct Knapsack {
    items: Vec<Vec<Choice>>,
    /// Σ of every item's cheapest option.
    base: u64,
    /// Bytes per DP unit.
    unit: u64,
    /// Extra cost of every option in units: `[item][option]`.
    cost: Vec<Vec<usize>>,
    /// Table width (units 0..states).
    states: usize,
    /// `[item · states + b]` = option chosen for item at remaining capacity `b`.
    pick: Vec<u8>,
    /// Least loss with extra cost ≤ `b` units.
    best: Vec<f64>,
    exact: bool,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Knapsack {
    /// Solves the DP for every budget up to the most expensive assignment. `max_cells` bounds the
    /// table (`items × states` bytes). Errors: an item without options, more than 255 options,
    /// or a non-finite loss.
    pub fn new(items: Vec<Vec<Choice>>, max_cells: usize) -> Result<Knapsack> {
        for (i, it) in items.iter().enumerate() {
            if it.is_empty() || it.len() > 255 {
                return Err(Error::invalid(format!(
                    "knapsack item {i} has {} options (need 1..=255)",
                    it.len()
                )));
            }
            if let Some(c) = it.iter().find(|c| !c.loss.is_finite()) {
                return Err(Error::invalid(format!(
                    "knapsack item {i} has a non-finite loss {}",
                    c.loss
                )));
            }
        }
        let mins: Vec<u64> = items
            .iter()
            .map(|it| it.iter().map(|c| c.bytes).min().unwrap_or(0))
            .collect();
        let base = mins.iter().sum();
        let mut g = 0;
        let mut range = 0u64;
        for (it, &m) in items.iter().zip(&mins) {
            let mut mx = 0;
            for c in it {
                g = gcd(g, c.bytes - m);
                mx = mx.max(c.bytes - m);
            }
            range += mx;
        }
        let mut unit = g.max(1);
        let max_states = (max_cells / items.len().max(1)).max(16) as u64;
        let mut exact = true;
        if range / unit + 1 > max_states {
            unit = range.div_ceil(max_states - 1).max(1);
            exact = false;
        }
        let cost: Vec<Vec<usize>> = items
            .iter()
            .zip(&mins)
            .map(|(it, &m)| {
                it.iter()
                    .map(|c| (c.bytes - m).div_ceil(unit) as usize)
                    .collect()
            })
            .collect();
        let states = cost
            .iter()
            .map(|c| c.iter().max().unwrap_or(&0))
            .sum::<usize>()
            + 1;
        let mut best = vec![0.0f64; states];
        let mut next = vec![0.0f64; states];
        let mut pick = vec![0u8; items.len() * states];
        for (i, it) in items.iter().enumerate() {
            let row = &mut pick[i * states..(i + 1) * states];
            for b in 0..states {
                let mut v = f64::INFINITY;
                let mut arg = 0usize;
                for (k, c) in it.iter().enumerate() {
                    let w = cost[i][k];
                    if w > b {
                        continue;
                    }
                    let cand = best[b - w] + c.loss;
                    // Ties go to the cheaper option.
                    if cand < v || (cand == v && w < cost[i][arg]) {
                        v = cand;
                        arg = k;
                    }
                }
                next[b] = v;
                row[b] = arg as u8;
            }
            std::mem::swap(&mut best, &mut next);
        }
        Ok(Knapsack {
            items,
            base,
            unit,
            cost,
            states,
            pick,
            best,
            exact,
        })
    }

    /// True when the byte unit divides every cost (the DP is then exactly optimal).
    pub fn exact(&self) -> bool {
        self.exact
    }
    /// Bytes per DP unit.
    pub fn unit(&self) -> u64 {
        self.unit
    }
    /// DP table width.
    pub fn states(&self) -> usize {
        self.states
    }
    /// Bytes of the cheapest assignment.
    pub fn min_bytes(&self) -> u64 {
        self.base
    }
    /// Bytes of the most expensive assignment (every item at its largest option).
    pub fn max_bytes(&self) -> u64 {
        self.items
            .iter()
            .map(|it| it.iter().map(|c| c.bytes).max().unwrap_or(0))
            .sum()
    }

    fn backtrack(&self, mut b: usize) -> Solution {
        let mut picks = vec![0; self.items.len()];
        for i in (0..self.items.len()).rev() {
            let k = self.pick[i * self.states + b] as usize;
            picks[i] = k;
            b -= self.cost[i][k];
        }
        let bytes = picks
            .iter()
            .zip(&self.items)
            .map(|(&k, it)| it[k].bytes)
            .sum();
        let loss = picks
            .iter()
            .zip(&self.items)
            .map(|(&k, it)| it[k].loss)
            .sum();
        Solution { picks, bytes, loss }
    }

    /// The least-loss assignment with total bytes ≤ `budget`. Errors when even the cheapest
    /// assignment does not fit, naming both numbers.
    pub fn solve_bytes(&self, budget: u64) -> Result<Solution> {
        if budget < self.base {
            return Err(Error::invalid(format!(
                "budget of {budget} payload bytes is below the smallest possible assignment \
                 ({} bytes, every tensor at its smallest candidate)",
                self.base
            )));
        }
        let b = (((budget - self.base) / self.unit) as usize).min(self.states - 1);
        Ok(self.backtrack(b))
    }

    /// The fewest-bytes assignment whose total loss is ≤ `max_loss`. Errors when no assignment
    /// reaches it (naming the least achievable loss).
    pub fn solve_max_loss(&self, max_loss: f64) -> Result<Solution> {
        // `best` is non-increasing in b: binary search for the first b with best[b] ≤ max_loss.
        let last = self.best[self.states - 1];
        if last > max_loss {
            return Err(Error::invalid(format!(
                "no assignment reaches predicted loss ≤ {max_loss:.6}; the least achievable is \
                 {last:.6}"
            )));
        }
        let (mut lo, mut hi) = (0usize, self.states - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.best[mid] <= max_loss {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(self.backtrack(lo))
    }

    /// Least total loss with bytes ≤ `budget` (`+∞` below the cheapest assignment).
    pub fn best_loss(&self, budget: u64) -> f64 {
        if budget < self.base {
            return f64::INFINITY;
        }
        self.best[(((budget - self.base) / self.unit) as usize).min(self.states - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squish_core::data::Rng;

    fn random_items(rng: &mut Rng, n: usize) -> Vec<Vec<Choice>> {
        (0..n)
            .map(|_| {
                (0..1 + rng.below(4))
                    .map(|_| Choice {
                        bytes: 2 * rng.below(60) as u64 + 8,
                        loss: rng.f32() as f64,
                    })
                    .collect()
            })
            .collect()
    }

    fn brute(
        items: &[Vec<Choice>],
        ok: &dyn Fn(u64, f64) -> bool,
        key: &dyn Fn(u64, f64) -> f64,
    ) -> Option<f64> {
        let mut idx = vec![0usize; items.len()];
        let mut best: Option<f64> = None;
        loop {
            let (b, l) = idx
                .iter()
                .zip(items)
                .fold((0u64, 0.0f64), |(b, l), (&k, it)| {
                    (b + it[k].bytes, l + it[k].loss)
                });
            if ok(b, l) {
                let v = key(b, l);
                best = Some(best.map_or(v, |x: f64| x.min(v)));
            }
            let mut i = 0;
            loop {
                if i == items.len() {
                    return best;
                }
                idx[i] += 1;
                if idx[i] < items[i].len() {
                    break;
                }
                idx[i] = 0;
                i += 1;
            }
        }
    }

    #[test]
    fn dp_is_optimal_against_brute_force() {
        let mut rng = Rng::new(7);
        for trial in 0..200 {
            let n = 1 + rng.below(6);
            let items = random_items(&mut rng, n);
            let ks = Knapsack::new(items.clone(), 1 << 20).unwrap();
            assert!(ks.exact());
            let budget =
                ks.min_bytes() + rng.below((ks.max_bytes() - ks.min_bytes() + 1) as usize) as u64;
            let s = ks.solve_bytes(budget).unwrap();
            assert!(s.bytes <= budget);
            let want = brute(&items, &|b, _| b <= budget, &|_, l| l).unwrap();
            assert!(
                (s.loss - want).abs() < 1e-9,
                "trial {trial}: dp {} brute {want}",
                s.loss
            );
            // Dual: fewest bytes with loss ≤ X.
            let x = s.loss + 0.1 * rng.f32() as f64;
            let d = ks.solve_max_loss(x).unwrap();
            assert!(d.loss <= x + 1e-12);
            let want_b = brute(&items, &|_, l| l <= x, &|b, _| b as f64).unwrap();
            assert_eq!(d.bytes as f64, want_b, "trial {trial}");
        }
    }

    #[test]
    fn coarse_units_still_fit_the_budget() {
        let mut rng = Rng::new(3);
        for _ in 0..50 {
            let items = random_items(&mut rng, 6);
            let ks = Knapsack::new(items.clone(), 6 * 16).unwrap();
            let budget =
                ks.min_bytes() + rng.below((ks.max_bytes() - ks.min_bytes() + 1) as usize) as u64;
            let s = ks.solve_bytes(budget).unwrap();
            assert!(s.bytes <= budget, "{} > {budget}", s.bytes);
        }
    }

    #[test]
    fn impossible_budgets_are_clear_errors() {
        let items = vec![vec![
            Choice {
                bytes: 10,
                loss: 1.0,
            },
            Choice {
                bytes: 20,
                loss: 0.0,
            },
        ]];
        let ks = Knapsack::new(items, 1024).unwrap();
        let e = ks.solve_bytes(9).unwrap_err().to_string();
        assert!(
            e.contains("below the smallest possible") && e.contains("10 bytes"),
            "{e}"
        );
        let e = ks.solve_max_loss(-1.0).unwrap_err().to_string();
        assert!(e.contains("least achievable"), "{e}");
        assert!(Knapsack::new(vec![vec![]], 1024).is_err());
        assert!(
            Knapsack::new(
                vec![vec![Choice {
                    bytes: 1,
                    loss: f64::NAN
                }]],
                1024
            )
            .is_err()
        );
    }
}
