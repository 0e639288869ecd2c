//! Process heap settings for training.
//!
//! A training step allocates and frees the same few hundred buffers of 0.1–30 MB every step (burn
//! tensors, scan states, gradients). glibc serves blocks above its mmap threshold (128 KiB at
//! start, raised adaptively) with a fresh `mmap` and returns them with `munmap`, and it gives the
//! top of each arena back to the kernel past its trim threshold. Each `munmap` of a page another
//! thread touched costs a TLB shoot-down on every core, and each fresh page a page fault: on the
//! default SsmMoe step (2 threads, 4 × 512 tokens) `perf` puts ~15 % of the time in
//! `smp_call_function_many_cond`, `exc_page_fault` and the zeroing of new pages.
//!
//! [`keep_freed_memory`] tells glibc to serve blocks up to 32 MiB from its arenas, keep up to
//! 1 GiB of freed memory per arena, and grow an arena 256 MiB at a time, so the next step reuses
//! the same pages. Peak memory barely changes (the blocks were live at the peak anyway; an arena
//! may hold up to the pad beyond its use); resident memory between steps stays at the peak
//! instead of falling back. It changes no result, only where freed memory goes.

use std::sync::OnceLock;

/// Blocks up to this size come from malloc's arenas instead of a fresh `mmap` (glibc's ceiling
/// for this setting on 64-bit is half its 64 MiB heap size).
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// Freed memory kept at the top of an arena before glibc returns it to the kernel.
pub const TRIM_THRESHOLD_BYTES: usize = 1 << 30;

/// Extra memory glibc asks for whenever an arena grows, and keeps when it shrinks. With the
/// default (128 KiB) the per-thread arenas of the micro-batch threads grow and shrink in small
/// steps every training step: `perf stat` counts 434K page faults in 25 steps of stories260K QAT
/// with it, 58K with this pad (task clock 16.1 s → 11.5 s).
pub const TOP_PAD_BYTES: usize = 256 << 20;

/// Set glibc's mmap and trim thresholds and top pad ([`MMAP_THRESHOLD_BYTES`],
/// [`TRIM_THRESHOLD_BYTES`], [`TOP_PAD_BYTES`]) for the whole process, once; later calls return
/// the first call's answer. Returns whether the settings took effect: `false` on targets other
/// than Linux with glibc (musl, macOS, Windows), where it does nothing. `cargo xtask` calls it at start; a program that trains through
/// `squish_core::train` from its own `main` can call it too.
pub fn keep_freed_memory() -> bool {
    static APPLIED: OnceLock<bool> = OnceLock::new();
    *APPLIED.get_or_init(apply)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; each value fits in a C int and is within
    // the range glibc accepts (it returns 0, and changes nothing, for a value it rejects).
    let mmap =
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int) };
    // SAFETY: as above.
    let trim =
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES as libc::c_int) };
    // SAFETY: as above.
    let pad = unsafe { libc::mallopt(libc::M_TOP_PAD, TOP_PAD_BYTES as libc::c_int) };
    let applied = mmap == 1 && trim == 1 && pad == 1;
    if !applied {
        tracing::warn!(
            "glibc rejected the heap settings (mallopt returned {mmap}, {trim}, {pad}); training runs with its defaults"
        );
    }
    applied
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_apply_on_glibc_and_stay_applied() {
        let first = keep_freed_memory();
        assert_eq!(first, cfg!(all(target_os = "linux", target_env = "gnu")));
        assert_eq!(keep_freed_memory(), first);
        // Allocation still works across the new threshold.
        let big = vec![1u8; MMAP_THRESHOLD_BYTES + 1];
        let small = vec![2u8; MMAP_THRESHOLD_BYTES - 4096];
        assert_eq!(big[MMAP_THRESHOLD_BYTES] as usize + small[0] as usize, 3);
    }
}
