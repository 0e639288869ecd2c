//! Sampling the next token: greedy (temperature 0), temperature, and top-p — seeded and
//! bit-for-bit the same as llama2.c's `run.c` sampler (xorshift* RNG, same cut-offs).

/// A seeded sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Nucleus threshold in (0, 1); ≥ 1 or ≤ 0 disables top-p.
    pub topp: f32,
    state: u64,
    scratch: Vec<(f32, usize)>,
}

impl Sampler {
    /// A sampler with the given temperature, top-p and seed (seed 0 is replaced by 1).
    pub fn new(temperature: f32, topp: f32, seed: u64) -> Self {
        Sampler {
            temperature,
            topp,
            state: seed.max(1),
            scratch: Vec::new(),
        }
    }

    fn random_u32(&mut self) -> u32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    fn random_f32(&mut self) -> f32 {
        (self.random_u32() >> 8) as f32 / 16_777_216.0
    }

    /// Picks the next token from `logits` (modified in place when sampling).
    /// Empty logits give 0; NaN logits never panic (the pick is then deterministic, not random).
    pub fn sample(&mut self, logits: &mut [f32]) -> usize {
        if self.temperature == 0.0 || logits.is_empty() {
            return argmax(logits);
        }
        for l in logits.iter_mut() {
            *l /= self.temperature;
        }
        softmax_in_place(logits);
        let coin = self.random_f32();
        if self.topp <= 0.0 || self.topp >= 1.0 {
            sample_mult(logits, coin)
        } else {
            self.sample_topp(logits, coin)
        }
    }

    fn sample_topp(&mut self, probs: &[f32], coin: f32) -> usize {
        let n = probs.len();
        let cutoff = (1.0 - self.topp) / (n as f32 - 1.0);
        self.scratch.clear();
        self.scratch.extend(
            probs
                .iter()
                .enumerate()
                .filter(|(_, p)| **p >= cutoff)
                .map(|(i, &p)| (p, i)),
        );
        if self.scratch.is_empty() {
            // Only when no probability compares >= the cut-off: NaN logits. Deterministic pick.
            return argmax(probs);
        }
        self.scratch
            .sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        let mut cum = 0.0f32;
        let mut last = self.scratch.len().saturating_sub(1);
        for (i, (p, _)) in self.scratch.iter().enumerate() {
            cum += p;
            if cum > self.topp {
                last = i;
                break;
            }
        }
        let r = coin * cum;
        let mut cdf = 0.0f32;
        for &(p, idx) in &self.scratch[..=last] {
            cdf += p;
            if r < cdf {
                return idx;
            }
        }
        self.scratch[last].1
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Numerically stable softmax in place.
pub fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

fn sample_mult(probs: &[f32], coin: f32) -> usize {
    let mut cdf = 0.0;
    for (i, p) in probs.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i;
        }
    }
    probs.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_empty_logits_never_panic() {
        for (t, p) in [(0.0, 0.9), (1.0, 0.9), (1.0, 1.0), (0.7, 0.0)] {
            let mut s = Sampler::new(t, p, 3);
            let mut nan = vec![f32::NAN; 8];
            assert!(s.sample(&mut nan) < 8, "{t} {p}");
            let mut mixed = vec![0.5, f32::NAN, 2.0, f32::INFINITY];
            assert!(s.sample(&mut mixed) < 4, "{t} {p}");
            assert_eq!(s.sample(&mut []), 0);
        }
    }

    #[test]
    fn greedy_takes_first_max() {
        let mut s = Sampler::new(0.0, 0.9, 7);
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn same_seed_same_samples_and_topp_stays_in_nucleus() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let run = |seed| {
            let mut s = Sampler::new(0.8, 0.5, seed);
            (0..20)
                .map(|_| s.sample(&mut logits.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let mut probs = logits.clone();
        for p in probs.iter_mut() {
            *p /= 0.8;
        }
        softmax_in_place(&mut probs);
        let mut sorted: Vec<_> = probs.iter().copied().enumerate().collect();
        sorted.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        let mut cum = 0.0;
        let mut nucleus = vec![];
        for (i, p) in sorted {
            nucleus.push(i);
            cum += p;
            if cum > 0.5 {
                break;
            }
        }
        assert!(run(42).iter().all(|t| nucleus.contains(t)));
    }
}
