//! One data-parallel optimizer step's gradients: the batch is split into a fixed number of
//! micro-batches (independent of the thread count), each runs forward + backward on its own model
//! replica (fresh autodiff leaves of the same parameters, so the same parameter ids), and the
//! gradients are summed in micro-batch order. The micro-batches run on up to
//! [`crate::threads::threads`] worker threads, each with its share of the thread budget; the
//! result is bit-identical for any thread count because every micro-batch computes the same
//! values wherever it runs and the reduction order is fixed.
//!
//! The loss of a step is `Σ_i (rows_i / batch) · loss_i`: per-token means (cross-entropy,
//! distillation) equal the whole batch's; the MoE balance loss, a product of batch means, is taken
//! per micro-batch.

use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;

use super::{Distill, Teacher, TrainConfig, Trainable, token_loss};
use crate::{Error, Result};

/// Row ranges of the `parts` micro-batches of a batch of `batch` rows (contiguous, sizes differ
/// by at most one; at most `batch` parts, at least one).
pub fn micro_ranges(batch: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let m = parts.clamp(1, batch.max(1));
    (0..m).map(|i| i * batch / m..(i + 1) * batch / m).collect()
}

/// One micro-batch's job: its model replica and its rows.
type Job<M> = (M, std::ops::Range<usize>);
/// One micro-batch's loss value and gradients.
type Outcome = Result<(f64, GradientsParams)>;

/// Loss value and gradients of one micro-batch on `replica`, its loss weighted by `weight`.
fn micro_step<M: Trainable>(
    replica: &M,
    inputs: &[Vec<u32>],
    targets: &[Vec<u32>],
    teacher: Option<Teacher>,
    cfg: &TrainConfig,
    weight: f32,
) -> Result<(f64, GradientsParams)> {
    let (logits, aux) = replica.train_forward(inputs)?; // [rows, seq, vocab]
    let teacher = match (teacher, cfg.distill_alpha > 0.0) {
        (Some(teach), true) => Some((
            teach(inputs)?.detach(), // [rows, seq, vocab]
            Distill {
                alpha: cfg.distill_alpha,
                tau: cfg.distill_temperature,
            },
        )),
        _ => None,
    };
    let mut loss: Tensor<1> = token_loss(logits, targets, teacher)?;
    if let Some(aux) = aux {
        loss = loss + aux * cfg.balance_coef;
    }
    let loss = loss * weight;
    let value = crate::model::tensor_to_vec(loss.clone().detach())?[0] as f64;
    let grads = GradientsParams::from_grads(loss.backward(), replica);
    Ok((value, grads))
}

/// The loss and summed gradients of one step of `model` on `(inputs, targets)`, split into
/// `cfg.micro_batches` micro-batches run on up to [`crate::threads::threads`] threads.
pub fn batch_gradients<M: Trainable>(
    model: &M,
    inputs: &[Vec<u32>],
    targets: &[Vec<u32>],
    teacher: Option<Teacher>,
    cfg: &TrainConfig,
) -> Result<(f64, GradientsParams)> {
    let ranges = micro_ranges(inputs.len(), cfg.micro_batches);
    let device = model
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| Error::invalid("train: the model has no parameters"))?;
    let batch = inputs.len() as f32;
    let jobs: Vec<Job<M>> = ranges
        .into_iter()
        .map(|r| (model.clone().fork(&device), r))
        .collect();
    let run = |(replica, r): Job<M>| {
        let w = r.len() as f32 / batch;
        micro_step(&replica, &inputs[r.clone()], &targets[r], teacher, cfg, w)
    };
    let workers = crate::threads::threads().min(jobs.len()).max(1);
    let results: Vec<Outcome> = if workers == 1 {
        jobs.into_iter().map(run).collect()
    } else {
        let share = crate::threads::share(workers);
        // Worker w takes micro-batches w, w + workers, …; results are put back in order.
        let mut lanes: Vec<Vec<(usize, Job<M>)>> = (0..workers).map(|_| Vec::new()).collect();
        for (i, job) in jobs.into_iter().enumerate() {
            lanes[i % workers].push((i, job));
        }
        let mut slots: Vec<Option<Outcome>> = Vec::new();
        std::thread::scope(|sc| {
            let run = &run;
            let mut lanes = lanes.into_iter();
            let first = lanes.next().unwrap_or_default();
            let handles: Vec<_> = lanes
                .map(|lane| {
                    sc.spawn(move || {
                        crate::threads::with_budget(share, || {
                            lane.into_iter()
                                .map(|(i, job)| (i, run(job)))
                                .collect::<Vec<_>>()
                        })
                    })
                })
                .collect();
            // The calling thread works the first lane.
            let mut done: Vec<(usize, Outcome)> = crate::threads::with_budget(share, || {
                first.into_iter().map(|(i, job)| (i, run(job))).collect()
            });
            for h in handles {
                match h.join() {
                    Ok(v) => done.extend(v),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
            slots.resize_with(done.len(), || None);
            for (i, r) in done {
                slots[i] = Some(r);
            }
        });
        slots
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err(Error::invalid("train: a micro-batch did not run"))))
            .collect()
    };
    let mut acc = GradientsAccumulator::<M>::new();
    let mut loss = 0.0;
    for r in results {
        let (v, g) = r?;
        loss += v;
        acc.accumulate(model, g);
    }
    Ok((loss, acc.grads()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_ranges_cover_the_batch_in_order() {
        assert_eq!(micro_ranges(4, 2), vec![0..2, 2..4]);
        assert_eq!(micro_ranges(5, 2), vec![0..2, 2..5]);
        assert_eq!(micro_ranges(1, 2), vec![0..1]);
        assert_eq!(micro_ranges(3, 0), vec![0..3]);
        let r = micro_ranges(16, 3);
        assert_eq!(r.first().unwrap().start, 0);
        assert_eq!(r.last().unwrap().end, 16);
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
    }
}
