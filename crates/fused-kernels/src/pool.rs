//! A persistent worker pool (std only): `threads − 1` workers live as long as the [`Pool`],
//! spin for a short while after each job and then park on a condition variable, so a parallel
//! region costs a few hundred nanoseconds (an atomic store and two cache-line round trips)
//! instead of a thread spawn.
//!
//! [`Pool::run`] calls `f(part)` for every `part < threads` and returns when all parts are done
//! (the closure may borrow the caller's stack, like `std::thread::scope`). Parts are claimed
//! from an atomic counter by whichever thread is free, the caller included: on a host where a
//! worker is descheduled (shared cores), the caller runs its parts instead of waiting for it.
//! A worker that wakes up on its caller's CPU moves itself to another CPU of its mask once
//! (Linux; the mask is restored, nothing is pinned): see `cpu`.
//! Which thread runs a part never changes what it computes: callers split work by part index,
//! so results are identical for any thread count. A pool that is already running a job
//! (another thread's, or a nested call from inside a part) runs the parts one after another on
//! the calling thread instead of waiting.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks (decode calls the pool every few µs).
const SPIN: Duration = Duration::from_micros(100);

/// A type-erased job; its lifetime is guaranteed by [`Pool::run`] waiting for every part.
type Job = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    /// Bumped once per job (and once to quit).
    epoch: AtomicUsize,
    /// Parts of the current job: next to claim (≥ `parts` once all are claimed).
    next: AtomicUsize,
    /// Parts of the current job finished.
    done: AtomicUsize,
    /// Parts of the current job.
    parts: AtomicUsize,
    /// The current job, written only while no worker runs one.
    job: UnsafeCell<Option<Job>>,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    quit: AtomicBool,
    /// A worker's part panicked (re-raised on the calling thread).
    panicked: AtomicBool,
    /// The CPU the caller of the current job runs on (`usize::MAX` = unknown).
    caller_cpu: AtomicUsize,
}

// SAFETY: `job` is written by the single caller holding `Pool::busy` before `next` is reset to
// 0 (release); a worker reads it only after claiming a part `< parts` from `next` (acquire),
// which can only be a part of the current job; the pointee is `Sync` and outlives the job
// because `run` waits until every part is `done`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw pointer is only dereferenced under that protocol.
unsafe impl Send for Shared {}

/// A persistent pool of `threads − 1` workers plus the calling thread (see the module docs).
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a job runs: one job at a time.
    busy: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

impl Pool {
    /// A pool of `threads` (at least 1; 1 = no workers, every job runs on the caller). Returns
    /// an error if the OS refuses to start a thread.
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            next: AtomicUsize::new(usize::MAX / 2),
            done: AtomicUsize::new(0),
            parts: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            quit: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            caller_cpu: AtomicUsize::new(usize::MAX),
        });
        let mut pool = Pool {
            shared,
            workers: Vec::new(),
            busy: Mutex::new(()),
        };
        for part in 1..threads.max(1) {
            let sh = Arc::clone(&pool.shared);
            let h = std::thread::Builder::new()
                .name(format!("squish-worker-{part}"))
                .spawn(move || worker(&sh))?;
            // On error `pool` is dropped here, which stops the workers started so far.
            pool.workers.push(h);
        }
        Ok(pool)
    }

    /// Parts per job: the workers plus the calling thread.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(part)` for every `part < self.threads()` (on whichever threads claim them, the
    /// caller included) and returns when all are done. A panic in any part is re-raised here.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let n = self.threads();
        if n == 1 {
            return f(0);
        }
        let Ok(_busy) = self.busy.try_lock() else {
            // Busy (another caller or a nested call): same parts, in order, on this thread.
            (0..n).for_each(f);
            return;
        };
        let sh = &*self.shared;
        // SAFETY: only the lifetime is erased; `f` outlives the job because this function does
        // not return before every part is counted in `done` (below).
        let job: Job = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f as *const _)
        };
        // SAFETY: no worker reads `job` now: every part of the previous job was claimed
        // (`next ≥ parts`) and finished; `busy` excludes other callers.
        unsafe { *sh.job.get() = Some(job) };
        sh.parts.store(n, Ordering::Relaxed);
        sh.done.store(0, Ordering::Relaxed);
        sh.caller_cpu.store(cpu::current(), Ordering::Relaxed);
        sh.next.store(0, Ordering::SeqCst);
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        let mut mine = Ok(());
        loop {
            let k = sh.next.fetch_add(1, Ordering::AcqRel);
            if k >= n {
                break;
            }
            if mine.is_ok() {
                mine = catch_unwind(AssertUnwindSafe(|| f(k)));
            }
            sh.done.fetch_add(1, Ordering::AcqRel);
        }
        let t0 = Instant::now();
        while sh.done.load(Ordering::Acquire) != n {
            if t0.elapsed() < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if sh.panicked.swap(false, Ordering::AcqRel) {
            panic!("a squish worker thread panicked");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.quit.store(true, Ordering::SeqCst);
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _l = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// A worker's loop: wait for a new epoch (spin, then park), claim and run parts, report.
fn worker(sh: &Shared) {
    let mut seen = 0usize;
    loop {
        let t0 = Instant::now();
        loop {
            let e = sh.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if t0.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.sleepers.fetch_add(1, Ordering::SeqCst);
            while sh.epoch.load(Ordering::SeqCst) == seen {
                g = sh.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            sh.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if sh.quit.load(Ordering::Acquire) {
            return;
        }
        let caller = sh.caller_cpu.load(Ordering::Relaxed);
        if caller != usize::MAX && cpu::current() == caller {
            cpu::move_off(caller);
        }
        loop {
            let k = sh.next.fetch_add(1, Ordering::AcqRel);
            if k >= sh.parts.load(Ordering::Acquire) {
                break;
            }
            // SAFETY: part `k` of the current job was claimed after the caller wrote `job` and
            // reset `next` (acquire); the caller keeps the pointee alive until this part is
            // counted in `done`.
            let job = unsafe { (*sh.job.get()).expect("a job is set before parts are claimable") };
            // SAFETY: see above.
            if catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(k) })).is_err() {
                sh.panicked.store(true, Ordering::Release);
            }
            sh.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Where threads run. A worker woken from its park is often placed on the CPU of the thread that
/// woke it (the scheduler's wake-affine heuristic), and on a small VM the idle CPU may not pull it
/// over before the job ends: the two then share one CPU and the job takes as long as on one
/// thread, or longer (measured on the 2-vCPU host: 2-thread prefill at 0.4–1.0× of 1 thread in
/// about half of the runs). A worker that finds itself on its caller's CPU moves off it once.
mod cpu {
    /// The CPU this thread runs on (`usize::MAX` if unknown).
    #[cfg(target_os = "linux")]
    pub fn current() -> usize {
        // SAFETY: sched_getcpu takes no arguments and only reads the thread's CPU.
        let c = unsafe { libc::sched_getcpu() };
        usize::try_from(c).unwrap_or(usize::MAX)
    }

    /// Migrates this thread to another CPU of its affinity mask than `cpu` (if it has one),
    /// then restores the mask, so the thread is not pinned.
    #[cfg(target_os = "linux")]
    pub fn move_off(cpu: usize) {
        // SAFETY: cpu_set_t is plain data (all-zero is the empty set); the libc calls get a
        // valid pointer and its size, and CPU_* touch bits below CPU_SETSIZE only (checked).
        unsafe {
            let mut mask: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut mask) != 0
                || cpu >= libc::CPU_SETSIZE as usize
                || libc::CPU_COUNT(&mask) < 2
            {
                return;
            }
            let mut others = mask;
            libc::CPU_CLR(cpu, &mut others);
            if libc::sched_setaffinity(0, size, &others) == 0 {
                libc::sched_setaffinity(0, size, &mask);
            }
        }
    }

    /// Unknown off Linux.
    #[cfg(not(target_os = "linux"))]
    pub fn current() -> usize {
        usize::MAX
    }

    /// Nothing to do off Linux.
    #[cfg(not(target_os = "linux"))]
    pub fn move_off(_cpu: usize) {}
}

/// Splits `0..len` into `parts` contiguous ranges whose inner bounds are multiples of `align`;
/// `part` gets the `part`-th (possibly empty).
pub(crate) fn split(len: usize, parts: usize, part: usize, align: usize) -> (usize, usize) {
    let per = len.div_ceil(parts.max(1)).next_multiple_of(align.max(1));
    let lo = (part * per).min(len);
    (lo, ((part + 1) * per).min(len))
}

/// A mutable slice handed to the parts of a job, each taking its own disjoint sub-range.
pub(crate) struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: parts only reach the data through `Disjoint::range`, whose contract makes the ranges
// taken concurrently pairwise disjoint; `T: Send` values may be written from any thread.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    /// Borrows `s` mutably for the duration of a job.
    pub fn new(s: &'a mut [T]) -> Self {
        Disjoint {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Elements `lo..hi`.
    ///
    /// # Safety
    /// No other live reference (from this or another part) may overlap `lo..hi`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, lo: usize, hi: usize) -> &mut [T] {
        assert!(
            lo <= hi && hi <= self.len,
            "Disjoint::range {lo}..{hi} of {}",
            self.len
        );
        // SAFETY: in bounds (asserted); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(lo), hi - lo) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_part_runs_once_per_job_across_parking() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            let hits: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
            for job in 0..200u64 {
                if job == 100 {
                    // Long enough for the workers to park.
                    std::thread::sleep(SPIN * 3);
                }
                pool.run(&|p| {
                    hits[p].fetch_add(job + 1, Ordering::Relaxed);
                });
            }
            for h in &hits {
                assert_eq!(h.load(Ordering::Relaxed), 200 * 201 / 2);
            }
        }
    }

    #[test]
    fn nested_and_concurrent_calls_run_serially_and_completely() {
        let pool = Pool::new(2).unwrap();
        let count = AtomicU64::new(0);
        pool.run(&|_| {
            pool.run(&|_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..50 {
                        pool.run(&|_| {
                            count.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), 4 + 3 * 50 * 2);
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|p| assert!(p != 1, "part 1 fails"));
        }));
        assert!(r.is_err());
        let count = AtomicU64::new(0);
        pool.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        // The poisoned `busy` lock makes later jobs run serially, still complete.
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    /// Moving a worker off its caller's CPU leaves it unpinned: its affinity mask is the same
    /// afterwards, and the CPU it reports is one the mask allows.
    #[cfg(target_os = "linux")]
    #[test]
    fn moving_off_a_cpu_restores_the_affinity_mask() {
        let mask = || {
            // SAFETY: all-zero cpu_set_t is the empty set; valid pointer and size.
            unsafe {
                let mut m: libc::cpu_set_t = std::mem::zeroed();
                let size = std::mem::size_of::<libc::cpu_set_t>();
                assert_eq!(libc::sched_getaffinity(0, size, &mut m), 0);
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &m))
                    .collect::<Vec<_>>()
            }
        };
        let before = mask();
        let here = cpu::current();
        assert!(
            before.contains(&here),
            "running on CPU {here}, mask {before:?}"
        );
        cpu::move_off(here);
        assert_eq!(mask(), before);
        let now = cpu::current();
        assert!(
            before.contains(&now),
            "running on CPU {now}, mask {before:?}"
        );
    }

    #[test]
    fn split_covers_the_range_with_aligned_inner_bounds() {
        for len in [0, 1, 7, 16, 100, 128, 129] {
            for parts in 1..4 {
                let mut next = 0;
                for p in 0..parts {
                    let (lo, hi) = split(len, parts, p, 16);
                    assert_eq!(lo, next);
                    assert!(lo <= hi && (hi == len || hi % 16 == 0));
                    next = hi;
                }
                assert_eq!(next, len);
            }
        }
    }
}
