//! One optimizer step's fake-quant deltas, computed once and shared by its micro-batches.
//!
//! Every micro-batch replica of a QAT step holds the same latent weights, and the delta
//! `Q(w) − w` of a tensor (with the per-step MSE scale search, the costliest part of a QAT
//! forward) depends on those values only. [`SharedDeltas::deltas`] keys a round of work on the
//! latent values themselves: callers with equal latents join the same round, each claims the
//! tensors nobody has claimed yet (an atomic counter), computes them, and waits for the rest — so
//! two micro-batch threads split the work, and a lone thread computes everything once for both
//! of its micro-batches. Results do not depend on who computed what (each delta is a pure function
//! of its tensor), so checkpoints stay byte-identical for any thread count.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use squish_core::{Error, Result};

/// One round: the latents it is for, the next unclaimed job, a result slot per job.
struct Round {
    latents: Vec<Vec<f32>>,
    next: AtomicUsize,
    slots: Vec<OnceLock<std::result::Result<Vec<f32>, String>>>,
}

/// The current round of deltas, shared by the clones of a QAT network (see the module docs).
#[derive(Default)]
pub struct SharedDeltas {
    current: Mutex<Option<Arc<Round>>>,
}

impl std::fmt::Debug for SharedDeltas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDeltas").finish_non_exhaustive()
    }
}

impl SharedDeltas {
    /// `delta(i, latents[i])` for every job `i`, shared with concurrent or earlier calls on
    /// equal `latents` (compared value by value). An error (or a panic) of any job is returned
    /// to every caller of that round.
    pub fn deltas(
        &self,
        latents: Vec<Vec<f32>>,
        delta: impl Fn(usize, &[f32]) -> Result<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>> {
        let round = {
            let mut cur = self
                .current
                .lock()
                .map_err(|_| Error::invalid("QAT delta cache: a worker panicked"))?;
            match cur.as_ref() {
                Some(r) if r.latents == latents => Arc::clone(r),
                _ => {
                    let n = latents.len();
                    let r = Arc::new(Round {
                        latents,
                        next: AtomicUsize::new(0),
                        slots: (0..n).map(|_| OnceLock::new()).collect(),
                    });
                    *cur = Some(Arc::clone(&r));
                    r
                }
            }
        };
        loop {
            let i = round.next.fetch_add(1, Ordering::Relaxed);
            if i >= round.slots.len() {
                break;
            }
            let out = catch_unwind(AssertUnwindSafe(|| delta(i, &round.latents[i])))
                .unwrap_or_else(|_| Err(Error::invalid("QAT delta computation panicked")))
                .map_err(|e| e.to_string());
            let _ = round.slots[i].set(out);
        }
        round
            .slots
            .iter()
            .map(|s| s.wait().clone().map_err(Error::invalid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_latents_share_one_computation_and_threads_split_it() {
        let shared = SharedDeltas::default();
        let calls = AtomicUsize::new(0);
        let latents: Vec<Vec<f32>> = (0..40).map(|i| vec![i as f32; 3]).collect();
        let f = |i: usize, w: &[f32]| {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(w.iter().map(|x| x * 2.0 + i as f32).collect())
        };
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| shared.deltas(latents.clone(), f).unwrap());
            let a = shared.deltas(latents.clone(), f).unwrap();
            (a, h.join().unwrap())
        });
        assert_eq!(a, b);
        assert_eq!(a[5], vec![15.0; 3]);
        let again = shared.deltas(latents.clone(), f).unwrap();
        assert_eq!(again, a);
        let n = calls.load(Ordering::Relaxed);
        assert_eq!(n, 40, "each job computed once, by one of the callers");
        let mut changed = latents.clone();
        changed[0][0] = 1.0;
        let c = shared.deltas(changed, f).unwrap();
        assert_eq!(c[0], vec![2.0, 0.0, 0.0]);
        assert_eq!(
            calls.load(Ordering::Relaxed),
            n + 40,
            "new latents, new round"
        );
    }

    #[test]
    fn a_failing_job_fails_every_caller() {
        let shared = SharedDeltas::default();
        let latents = vec![vec![1.0], vec![2.0]];
        let r = shared.deltas(latents.clone(), |i, w| {
            if i == 1 {
                Err(Error::invalid("bad tensor"))
            } else {
                Ok(w.to_vec())
            }
        });
        assert!(r.unwrap_err().to_string().contains("bad tensor"));
        let r = shared.deltas(latents, |_, _| panic!("not called again"));
        assert!(r.is_err());
    }
}
