//! Measured sensitivity: the calibration loss with exactly one tensor changed, on the native
//! runtime, against the F32 model's logits — and its JSON cache.
//!
//! Scored positions follow the llama-cpp protocol inside every calibration window: predictions
//! at positions `len/2 … len−2` of the next token (each sees at least half a window of context).
//! Per scored position: `KL(p_F32 ‖ p_candidate)` and the change of `−log p(next token)`.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};
use squish_core::checkpoint::{TensorData, WeightTensor, Weights};
use squish_core::config::ModelConfig;
use squish_core::{Error, Result, fsutil};
use squish_kernels::runtime::{Runtime, RuntimeOptions};

/// The F32 model's log-probabilities at the scored positions of the calibration windows.
#[derive(Debug, Clone)]
pub struct Reference {
    windows: Vec<Vec<u32>>,
    /// `[positions, vocab]` log-softmax of the F32 logits.
    logp: Vec<f32>,
    vocab: usize,
    /// Scored positions (all windows).
    pub positions: usize,
    /// Mean next-token loss of the F32 model at the scored positions (nats/token).
    pub base_nats: f64,
}

/// Mean loss change of one model against the reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Mean `KL(p_F32 ‖ p)` per scored token (nats).
    pub kl: f64,
    /// Mean next-token loss minus the F32 model's (nats/token).
    pub dnats: f64,
}

fn scored(len: usize) -> std::ops::Range<usize> {
    len / 2..len.saturating_sub(1)
}

fn log_softmax(l: &[f32], out: &mut [f32]) {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    for (o, &x) in out.iter_mut().zip(l) {
        *o = (x as f64 - lse) as f32;
    }
}

/// Runs every window through `w` and calls `f(window, position, logits)` at the scored positions.
fn run(
    config: &ModelConfig,
    w: &Weights,
    windows: &[Vec<u32>],
    mut f: impl FnMut(usize, usize, &[f32]),
) -> Result<()> {
    let mut rt = Runtime::from_weights(config, w, RuntimeOptions::default())?;
    let v = rt.vocab_size();
    let mut buf = Vec::new();
    for (wi, win) in windows.iter().enumerate() {
        buf.resize(win.len() * v, 0.0);
        rt.reset();
        rt.prefill_all(win, &mut buf)?;
        for j in scored(win.len()) {
            f(wi, j, &buf[j * v..(j + 1) * v]);
        }
    }
    Ok(())
}

impl Reference {
    /// The F32 model's log-probabilities on `windows` (each ≥ 4 tokens).
    pub fn new(config: &ModelConfig, w: &Weights, windows: &[Vec<u32>]) -> Result<Reference> {
        if windows.is_empty() {
            return Err(Error::invalid("mixed precision needs calibration windows"));
        }
        if let Some(i) = windows.iter().position(|x| x.len() < 4) {
            return Err(Error::invalid(format!(
                "calibration window {i} has {} tokens (need ≥ 4)",
                windows[i].len()
            )));
        }
        let vocab = config.vocab_size();
        let positions: usize = windows.iter().map(|x| scored(x.len()).len()).sum();
        let mut logp = vec![0.0f32; positions * vocab];
        let (mut k, mut nll) = (0usize, 0.0f64);
        run(config, w, windows, |wi, j, l| {
            let out = &mut logp[k * vocab..(k + 1) * vocab];
            log_softmax(l, out);
            nll -= out[windows[wi][j + 1] as usize] as f64;
            k += 1;
        })?;
        Ok(Reference {
            windows: windows.to_vec(),
            logp,
            vocab,
            positions,
            base_nats: nll / positions as f64,
        })
    }

    /// The loss change of the model `w` (same config) against the reference.
    pub fn score(&self, config: &ModelConfig, w: &Weights) -> Result<Score> {
        let v = self.vocab;
        let (mut k, mut kl, mut dn) = (0usize, 0.0f64, 0.0f64);
        let mut q = vec![0.0f32; v];
        run(config, w, &self.windows, |wi, j, l| {
            log_softmax(l, &mut q);
            let p = &self.logp[k * v..(k + 1) * v];
            kl += p
                .iter()
                .zip(&q)
                .map(|(&a, &b)| (a as f64).exp() * (a - b) as f64)
                .sum::<f64>();
            let t = self.windows[wi][j + 1] as usize;
            dn += (p[t] - q[t]) as f64;
            k += 1;
        })?;
        let n = self.positions.max(1) as f64;
        Ok(Score {
            kl: kl / n,
            dnats: dn / n,
        })
    }
}

/// One single-tensor change to measure.
#[derive(Debug, Clone)]
pub struct Job {
    /// Tensor name.
    pub tensor: String,
    /// Its new value.
    pub value: WeightTensor,
}

/// Measures every job (one tensor replaced in `base`) on `threads` workers; `progress(i, score)`
/// is called on the calling thread as each finishes. Returns the scores in job order.
pub fn measure(
    config: &ModelConfig,
    base: &Weights,
    reference: &Reference,
    jobs: &[Job],
    threads: usize,
    mut progress: impl FnMut(usize, &Score),
) -> Result<Vec<Score>> {
    let threads = threads.clamp(1, jobs.len().max(1));
    let mut out: Vec<Option<Score>> = vec![None; jobs.len()];
    let (tx, rx) = mpsc::channel::<(usize, Result<Score>)>();
    std::thread::scope(|s| {
        for t in 0..threads {
            let tx = tx.clone();
            s.spawn(move || {
                let mut w = base.clone();
                for i in (t..jobs.len()).step_by(threads) {
                    let job = &jobs[i];
                    let res = (|| {
                        let old = w.get(&job.tensor)?.clone();
                        w.insert(job.tensor.clone(), job.value.clone());
                        let r = reference.score(config, &w);
                        w.insert(job.tensor.clone(), old);
                        r
                    })();
                    let failed = res.is_err();
                    if tx.send((i, res)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut first_err = None;
        for (i, r) in rx {
            match r {
                Ok(sc) => {
                    progress(i, &sc);
                    out[i] = Some(sc);
                }
                Err(e) => {
                    first_err.get_or_insert(Error::tensor(&jobs[i].tensor, e.to_string()));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?;
    out.into_iter()
        .enumerate()
        .map(|(i, s)| s.ok_or_else(|| Error::invalid(format!("sensitivity job {i} was not run"))))
        .collect()
}

/// One cached measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Tensor name.
    pub tensor: String,
    /// Candidate label.
    pub candidate: String,
    /// sha256 of the stored tensor bytes that were measured.
    pub sha256: String,
    /// The measurement.
    pub score: Score,
}

/// The on-disk sensitivity cache (one JSON file per key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitivityCache {
    /// The key (sha256 of checkpoint, calibration, statistics and candidates).
    pub key: String,
    /// F32 loss at the scored calibration positions.
    pub base_nats: f64,
    /// Scored positions.
    pub positions: usize,
    /// Every (tensor, candidate) measurement.
    pub entries: Vec<CacheEntry>,
}

/// The cache file of `key` in `dir`.
pub fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("sensitivity-{}.json", &key[..key.len().min(24)]))
}

/// Reads the cache for `key`; `Ok(None)` when absent or written for another key.
pub fn load_cache(dir: &Path, key: &str) -> Result<Option<SensitivityCache>> {
    let p = cache_path(dir, key);
    if !p.exists() {
        return Ok(None);
    }
    let bytes = fsutil::read(&p)?;
    let c: SensitivityCache = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("ignoring unreadable sensitivity cache {}: {e}", p.display());
            return Ok(None);
        }
    };
    Ok((c.key == key).then_some(c))
}

/// Writes the cache atomically.
pub fn save_cache(dir: &Path, c: &SensitivityCache) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let p = cache_path(dir, &c.key);
    let json = serde_json::to_vec_pretty(c).map_err(|e| Error::invalid(e.to_string()))?;
    fsutil::atomic_write(&p, &json)?;
    Ok(p)
}

/// A stable digest of the calibration statistics (names, token counts, `XᵀX`, `Σ|x|`).
pub fn stats_digest(stats: Option<&squish_quant::Calibration>) -> String {
    let Some(c) = stats else {
        return "none".into();
    };
    let mut b = Vec::new();
    for (name, s) in &c.tensors {
        b.extend(name.as_bytes());
        b.extend(s.n.to_le_bytes());
        b.extend((s.cols as u64).to_le_bytes());
        s.xtx.iter().for_each(|x| b.extend(x.to_le_bytes()));
        s.abs_sum.iter().for_each(|x| b.extend(x.to_le_bytes()));
    }
    fsutil::sha256_hex(&b)
}

/// A digest of token windows.
pub fn windows_digest(windows: &[Vec<u32>]) -> String {
    let mut b = Vec::new();
    for w in windows {
        b.extend((w.len() as u64).to_le_bytes());
        w.iter().for_each(|t| b.extend(t.to_le_bytes()));
    }
    fsutil::sha256_hex(&b)
}

/// True when `t` is stored as F32.
pub fn is_f32(t: &WeightTensor) -> bool {
    matches!(t.data, TensorData::F32(_))
}
