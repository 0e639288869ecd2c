//! Token phases: work over a batch's tokens `0..n` that is the same for every token (matmuls,
//! norms, RoPE, residual adds, MoE routing and experts) runs as one pool job, each part a
//! contiguous token range with its own buffers (scratch, routing lists), so a range stays on one
//! core through every op of the phase: one hand-off per phase instead of one per matmul. Each
//! token's arithmetic depends on that token alone (the kernels' results do not depend on the
//! batch), so the bits do not depend on the ranges, i.e. on the thread count.

use std::sync::{Mutex, MutexGuard};

use squish_core::{Error, Result};

use super::{Exec, PAR_MIN_MACS, Split};
use crate::pool::{Pool, split};

/// Locks `m`, ignoring poisoning (a panicking part re-raises on the caller anyway).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One part of a token phase: tokens `t0..t1`, its buffers, and how its matmuls run.
pub(crate) struct Part<'b, B> {
    /// First token.
    pub t0: usize,
    /// One past the last token.
    pub t1: usize,
    /// This part's buffers.
    pub bufs: &'b mut B,
    /// [`Split::Here`] inside a pool job; [`Split::Pool`] when the phase runs on the calling
    /// thread (a short batch: a matmul big enough on its own, e.g. one token of a wide model,
    /// may still split its rows).
    pub split: Split,
}

/// Runs a token phase over tokens `0..n`.
pub(crate) enum Tokens<'a, B> {
    /// On the calling thread, in part 0's buffers (borrowed: no lock per phase).
    Here(usize, &'a mut B),
    /// Split over the pool, one part's buffers per thread.
    Pool(usize, &'a Pool, &'a [Mutex<B>]),
}

impl<'a, B: Send> Tokens<'a, B> {
    /// The pool when the batch is long enough (`work` ≥ [`PAR_MIN_MACS`]) and `parts` holds
    /// one part's buffers per thread; otherwise the calling thread with `parts[0]`.
    pub fn new(ex: &'a Exec, n: usize, work: usize, parts: &'a mut [Mutex<B>]) -> Tokens<'a, B> {
        match ex.pool_for(work, PAR_MIN_MACS) {
            Some(p) if p.threads() == parts.len() => Tokens::Pool(n, p, parts),
            _ => {
                let first = parts[0].get_mut().unwrap_or_else(|e| e.into_inner());
                Tokens::Here(n, first)
            }
        }
    }

    /// Calls `f` for every part's non-empty token range (on the pool) or once for `0..n` (on
    /// this thread); returns the first error.
    pub fn run(&mut self, f: &(dyn Fn(Part<'_, B>) -> Result<()> + Sync)) -> Result<()> {
        let (n, p, bufs) = match self {
            Tokens::Here(n, bufs) => {
                return f(Part {
                    t0: 0,
                    t1: *n,
                    bufs,
                    split: Split::Pool,
                });
            }
            Tokens::Pool(n, p, bufs) => (*n, *p, *bufs),
        };
        let first_err: Mutex<Option<Error>> = Mutex::new(None);
        p.run(&|k| {
            let (t0, t1) = split(n, bufs.len(), k, 1);
            if t0 < t1
                && let Err(e) = f(Part {
                    t0,
                    t1,
                    bufs: &mut lock(&bufs[k]),
                    split: Split::Here,
                })
            {
                lock(&first_err).get_or_insert(e);
            }
        });
        match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
