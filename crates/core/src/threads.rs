//! The process-wide thread budget of squish's own parallel code (training's micro-batches and the
//! fused scan's batch rows).
//!
//! One global budget, set once by the CLI (`--threads N`; 0 = the default) and read everywhere:
//! [`threads`]. Code that splits work over `k` worker threads gives each worker a share of the
//! budget with [`with_budget`], so nested parallel code (the scan inside a training micro-batch)
//! does not oversubscribe the cores. burn's CPU backends as built here (flex and ndarray, without
//! their `rayon` features) run every operation on the calling thread, so this budget is all the
//! parallelism there is.
//!
//! Results never depend on the budget: callers partition work in a fixed way and reduce in a
//! fixed order (training: fixed micro-batches; scan: per-row work, sums in row order).

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The global budget; 0 = not set (use [`default_threads`]).
static BUDGET: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's share of the budget while inside [`with_budget`]; 0 = none.
    static LOCAL: Cell<usize> = const { Cell::new(0) };
}

/// The available parallelism of this process (≥ 1).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Physical cores (distinct `core_cpus_list` sets in sysfs on Linux), else the available
/// parallelism; never more than the available parallelism.
pub fn physical_cores() -> usize {
    let avail = default_threads();
    let mut sets = std::collections::BTreeSet::new();
    for cpu in 0..avail.max(1) * 4 {
        let p = format!("/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list");
        if let Ok(s) = std::fs::read_to_string(p) {
            sets.insert(s.trim().to_string());
        }
    }
    if sets.is_empty() {
        avail
    } else {
        sets.len().clamp(1, avail)
    }
}

/// Sets the global budget; `0` restores the default ([`default_threads`]).
pub fn set_threads(n: usize) {
    BUDGET.store(n, Ordering::Relaxed);
}

/// The budget of the calling thread: its share inside [`with_budget`], else the global budget,
/// else [`default_threads`]. Always ≥ 1.
pub fn threads() -> usize {
    let local = LOCAL.with(Cell::get);
    if local > 0 {
        return local;
    }
    match BUDGET.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

/// Runs `f` with the calling thread's budget set to `n` (≥ 1), restoring the previous value after.
pub fn with_budget<R>(n: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            LOCAL.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LOCAL.with(|l| l.replace(n.max(1))));
    f()
}

/// Splits the calling thread's budget over `workers` workers: the share of each (≥ 1).
pub fn share(workers: usize) -> usize {
    (threads() / workers.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_budget_overrides_and_restores() {
        let outer = threads();
        assert!(outer >= 1);
        with_budget(3, || {
            assert_eq!(threads(), 3);
            with_budget(1, || assert_eq!(threads(), 1));
            assert_eq!(threads(), 3);
            assert_eq!(share(2), 1);
            assert_eq!(share(0), 3);
        });
        assert_eq!(threads(), outer);
        assert_eq!(with_budget(0, threads), 1);
    }

    #[test]
    fn physical_cores_is_within_the_available_parallelism() {
        let p = physical_cores();
        assert!(p >= 1 && p <= default_threads());
    }
}
