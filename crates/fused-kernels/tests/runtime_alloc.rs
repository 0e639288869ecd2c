//! The decode loop allocates nothing: a counting global allocator checks
//! `Runtime::step` (both families; F32, INT8/INT4 and codebook weights) and a prefill within
//! `max_batch` after warm-up.

mod rt_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rt_common::*;
use squish_core::config::{LlamaConfig, ModelConfig, SsmMoeConfig};
use squish_core::model::ssm_moe_weights::init_weights;
use squish_kernels::Activations;
use squish_kernels::runtime::{Runtime, RuntimeOptions};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the measuring thread counts (the test harness's main thread may
    /// allocate at any time).
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn note() {
    if COUNTING.with(|c| c.get()) {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
    }
}

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while `f` runs.
fn count(f: impl FnOnce()) -> usize {
    let before = ALLOCS.load(Ordering::SeqCst);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(Ordering::SeqCst) - before
}

fn check(cfg: ModelConfig, w: &squish_core::checkpoint::Weights, vocab: usize) {
    for act in [Activations::F32, Activations::Int8] {
        for threads in [1, 2] {
            check_act(&cfg, w, vocab, act, threads);
        }
    }
}

fn check_act(
    cfg: &ModelConfig,
    w: &squish_core::checkpoint::Weights,
    vocab: usize,
    act: Activations,
    threads: usize,
) {
    let mut rt = Runtime::from_weights(
        cfg,
        w,
        RuntimeOptions {
            max_batch: 32,
            act,
            threads,
            ..RuntimeOptions::default()
        },
    )
    .unwrap();
    let toks = tokens(100, vocab, 3);
    // Warm-up: one prefill and one step.
    rt.prefill(&toks[..32]).unwrap();
    rt.step(toks[32]).unwrap();
    let n = count(|| {
        for &t in &toks[33..90] {
            rt.step(t).unwrap();
        }
    });
    assert_eq!(
        n, 0,
        "{n} allocations in 57 decode steps ({act:?}, {threads} threads)"
    );
    rt.reset();
    let n = count(|| {
        rt.prefill(&toks[..32]).unwrap();
        rt.prefill(&toks[32..64]).unwrap();
    });
    assert_eq!(
        n, 0,
        "{n} allocations in prefill ({act:?}, {threads} threads)"
    );
}

#[test]
fn decode_and_prefill_do_not_allocate() {
    let c = LlamaConfig {
        dim: 48,
        hidden_dim: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        vocab_size: 77,
        seq_len: 128,
        shared_classifier: false,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
    };
    let w = random_llama(&c, &[64, 40], 1);
    check(ModelConfig::Llama(c.clone()), &w, 77);
    let q = quantize(&w, 32, |n| {
        Some(if n.contains("w1") { Fmt::Q8 } else { Fmt::Q4 })
    });
    check(ModelConfig::Llama(c.clone()), &q, 77);
    // Codebook weights (their int8 form under int8 activations) beside INT4.
    let cb = quantize(&w, 32, |n| {
        Some(if n.contains("attention") {
            Fmt::Q4
        } else {
            Fmt::Cb4
        })
    });
    check(ModelConfig::Llama(c), &cb, 77);
    let s = SsmMoeConfig {
        d_model: 32,
        n_layers: 2,
        vocab_size: 50,
        seq_len: 128,
        d_inner: 64,
        d_state: 8,
        d_conv: 4,
        dt_rank: 4,
        n_experts: 4,
        top_k: 2,
        expert_hidden: 48,
        norm_eps: 1e-5,
    };
    let w = init_weights(&s, 5).unwrap();
    check(ModelConfig::SsmMoe(s), &w, 50);
}
