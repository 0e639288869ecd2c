//! Oscillation of codebook QAT, measured: how many weights change their code from one training
//! step to the next (Nagel et al. 2022, "Overcoming Oscillations in Quantization-Aware
//! Training": low-bit latents sitting on a decision boundary flip between two levels).
//!
//! Every fake-quant forward reports each codebook tensor's codes ([`CodeFlips::observe`]); the
//! micro-batch replicas of one step see the same latents, so only changes between steps count.
//! The training callback closes each step ([`CodeFlips::end_step`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Per-step code changes of a QAT run's codebook tensors.
#[derive(Debug, Default)]
pub struct CodeFlips {
    state: Mutex<FlipState>,
}

#[derive(Debug, Default)]
struct FlipState {
    /// The last codes seen per plan entry.
    last: BTreeMap<usize, Vec<u8>>,
    /// Changes seen since the last [`CodeFlips::end_step`].
    pending: u64,
    /// Changes per closed step.
    per_step: Vec<u64>,
}

/// What [`CodeFlips`] measured: the share of codebook weights whose code changed per step,
/// averaged over the first and the last tenth of the steps, and at the last step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlipSummary {
    /// Codebook weights tracked.
    pub weights: usize,
    /// Steps measured (the first step has no predecessor and counts no change).
    pub steps: usize,
    /// Mean share of weights flipping per step over the first tenth of the steps.
    pub first_tenth: f64,
    /// Mean share over the last tenth.
    pub last_tenth: f64,
    /// Share at the last step.
    pub last_step: f64,
}

impl CodeFlips {
    /// Records the codes of plan entry `entry` (one forward); changes against the previous
    /// codes of that entry count towards the open step.
    pub fn observe(&self, entry: usize, codes: Vec<u8>) {
        let Ok(mut s) = self.state.lock() else {
            return; // a panicked worker: the measurement is lost, training reports the panic
        };
        let changed = match s.last.get(&entry) {
            Some(prev) if prev.len() == codes.len() => {
                prev.iter().zip(&codes).filter(|(a, b)| a != b).count() as u64
            }
            _ => 0,
        };
        s.pending += changed;
        s.last.insert(entry, codes);
    }

    /// Closes a training step.
    pub fn end_step(&self) {
        if let Ok(mut s) = self.state.lock() {
            let n = std::mem::take(&mut s.pending);
            s.per_step.push(n);
        }
    }

    /// The summary; `None` when no codebook tensor was seen or no step closed.
    pub fn summary(&self) -> Option<FlipSummary> {
        let s = self.state.lock().ok()?;
        let weights: usize = s.last.values().map(Vec::len).sum();
        let steps = s.per_step.len();
        if weights == 0 || steps == 0 {
            return None;
        }
        let share =
            |v: &[u64]| v.iter().sum::<u64>() as f64 / (v.len().max(1) as f64 * weights as f64);
        let tenth = steps.div_ceil(10);
        Some(FlipSummary {
            weights,
            steps,
            first_tenth: share(&s.per_step[..tenth]),
            last_tenth: share(&s.per_step[steps - tenth..]),
            last_step: share(&s.per_step[steps - 1..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_changes_between_steps_only() {
        let f = CodeFlips::default();
        assert!(f.summary().is_none());
        f.observe(0, vec![1, 2, 3, 4]);
        f.observe(0, vec![1, 2, 3, 4]); // a second replica of the same step
        f.observe(5, vec![0; 4]);
        f.end_step();
        f.observe(0, vec![1, 0, 3, 0]); // two flips
        f.observe(5, vec![0, 0, 0, 1]); // one flip
        f.end_step();
        let s = f.summary().unwrap();
        assert_eq!((s.weights, s.steps), (8, 2));
        assert_eq!(s.first_tenth, 0.0);
        assert_eq!(s.last_step, 3.0 / 8.0);
        assert_eq!(s.last_tenth, 3.0 / 8.0);
    }
}
