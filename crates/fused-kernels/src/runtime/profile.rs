//! Opt-in per-operation wall time of the runtime (the README's profile table,
//! `examples/rtprofile.rs`). Off by default: a disabled [`span`] is one relaxed atomic load.
//!
//! Spans nest; each operation is charged its *exclusive* time (a matmul's activation staging is
//! its own line, not part of the matmul's). Times are per thread: only the calling thread's
//! spans are recorded (the pool's workers run inside the caller's span).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);

/// One operation's accumulated time.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// Operation name (e.g. `"attention"`).
    pub op: &'static str,
    /// Exclusive seconds.
    pub seconds: f64,
    /// Times the operation ran.
    pub calls: u64,
}

#[derive(Default)]
struct State {
    /// Open spans: (name, start, seconds spent in child spans).
    stack: Vec<(&'static str, Instant, f64)>,
    totals: Vec<OpTime>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Turns recording on or off for every thread (off by default).
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Returns and clears this thread's totals, in first-seen order.
pub fn take() -> Vec<OpTime> {
    STATE.with(|s| std::mem::take(&mut s.borrow_mut().totals))
}

/// A timed region; ends when dropped.
pub(crate) struct Span(bool);

/// Opens the span `op` (a no-op unless [`enable`]d).
#[inline]
pub(crate) fn span(op: &'static str) -> Span {
    if !ON.load(Ordering::Relaxed) {
        return Span(false);
    }
    STATE.with(|s| s.borrow_mut().stack.push((op, Instant::now(), 0.0)));
    Span(true)
}

impl Drop for Span {
    fn drop(&mut self) {
        if !self.0 {
            return;
        }
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some((op, t0, child)) = s.stack.pop() else {
                return;
            };
            let total = t0.elapsed().as_secs_f64();
            if let Some(parent) = s.stack.last_mut() {
                parent.2 += total;
            }
            let own = (total - child).max(0.0);
            match s.totals.iter_mut().find(|t| t.op == op) {
                Some(t) => {
                    t.seconds += own;
                    t.calls += 1;
                }
                None => s.totals.push(OpTime {
                    op,
                    seconds: own,
                    calls: 1,
                }),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_spans_are_charged_exclusive_time() {
        enable(true);
        take();
        let wall = std::time::Instant::now();
        {
            let _outer = span("outer");
            std::thread::sleep(std::time::Duration::from_millis(2));
            let _inner = span("inner");
            std::thread::sleep(std::time::Duration::from_millis(4));
        }
        let wall = wall.elapsed().as_secs_f64();
        let t = take();
        enable(false);
        let get = |op| t.iter().find(|x| x.op == op).unwrap().clone();
        let (o, i) = (get("outer"), get("inner"));
        assert_eq!((o.calls, i.calls), (1, 1));
        assert!(i.seconds >= 0.004 && o.seconds >= 0.002, "{t:?}");
        // Exclusive: outer + inner add up to the block's wall time (an inclusive outer would
        // count the inner ≥ 4 ms twice), however slow a loaded machine makes the sleeps.
        assert!(
            o.seconds + i.seconds <= wall + 1e-3,
            "outer excludes inner: {t:?}, wall {wall}"
        );
        let _off = span("off");
        drop(_off);
        assert!(take().is_empty());
    }
}
