//! Fitting the budget with real file bytes: the DP sees tensor payload only, so the header is
//! estimated, the result serialized with `checkpoint::to_bytes`, and the payload budget tightened
//! by any overshoot until the file fits. The dual problem (fewest bytes with ΔPPL ≤ P) solves
//! against the predicted loss and, when perplexity can be measured, re-solves with the fitted
//! additivity factor until the measured ΔPPL meets the target.

use squish_core::{Error, Result};

use crate::config::Budget;
use crate::mix;
use crate::pipeline::Ctx;
use crate::report::SolveAttempt;
use crate::solve::{Knapsack, Solution};
use crate::stage::MixedEvent;

fn attempt(ctx: &Ctx<'_>, s: &Solution, payload_budget: u64) -> Result<SolveAttempt> {
    let ck = ctx.build(&s.picks);
    Ok(SolveAttempt {
        payload_budget,
        payload_bytes: s.bytes,
        file_bytes: mix::file_bytes(&ck)?,
        predicted_dnats: s.loss,
        measured_ppl: None,
    })
}

/// Solves `ctx.cfg.budget`; returns the chosen assignment, its measured perplexity if the solve
/// measured it (dual problem), and every attempt (pushed into `attempts`).
pub(crate) fn fit(
    ctx: &Ctx<'_>,
    ks: &Knapsack,
    attempts: &mut Vec<SolveAttempt>,
    on_event: &mut dyn FnMut(&MixedEvent),
) -> Result<(Solution, Option<f64>)> {
    let cfg = ctx.cfg;
    let smallest = ks.solve_bytes(ks.min_bytes())?;
    let small = attempt(ctx, &smallest, ks.min_bytes())?;
    // Bytes outside the DP's payload: header + tensors nobody decides.
    let overhead = small.file_bytes - small.payload_bytes;
    if let Some(limit) = cfg.budget.byte_limit(ctx.params) {
        if limit < small.file_bytes {
            return Err(Error::invalid(format!(
                "budget {} = {limit} file bytes ({:.3} bits/param) is below the smallest possible \
                 mix: {} bytes ({:.3} bits/param) with every tensor at its smallest candidate",
                cfg.budget.label(),
                limit as f64 * 8.0 / ctx.params as f64,
                small.file_bytes,
                small.file_bytes as f64 * 8.0 / ctx.params as f64
            )));
        }
        // Tighten on overshoot, loosen on slack (header bytes differ between mixes); keep the
        // best mix that fits.
        let mut pb = limit.saturating_sub(overhead).max(ks.min_bytes());
        let mut best: Option<Solution> = None;
        let mut tried = std::collections::BTreeSet::new();
        for _ in 0..=cfg.max_resolves {
            if !tried.insert(pb) {
                break;
            }
            let s = ks.solve_bytes(pb)?;
            let a = attempt(ctx, &s, pb)?;
            on_event(&MixedEvent::Solved(a.clone()));
            let fb = a.file_bytes;
            attempts.push(a);
            if fb <= limit {
                if best.as_ref().is_none_or(|b| s.loss < b.loss) {
                    best = Some(s);
                }
                if fb == limit || pb >= ks.max_bytes() {
                    break;
                }
                pb += limit - fb;
            } else {
                pb = pb.saturating_sub(fb - limit).max(ks.min_bytes());
            }
        }
        if let Some(s) = best {
            return Ok((s, None));
        }
        // The smallest mix fits (checked above), so this only happens with a very small
        // `max_resolves`: fall back to it.
        on_event(&MixedEvent::Solved(small.clone()));
        attempts.push(small);
        return Ok((smallest, None));
    }
    let Budget::MaxDppl(pct) = cfg.budget else {
        return Err(Error::invalid(
            "budget has neither a byte limit nor a ΔPPL target",
        ));
    };
    let target = (1.0 + pct / 100.0).ln();
    // Secant on α = measured ln(PPL/PPL_F32) / predicted (fitted on the latest mix), safeguarded
    // by bisection between the largest predicted loss that met the target when measured and the
    // smallest that did not; keep the fewest-bytes mix whose *measured* ΔPPL meets the target.
    let mut best: Option<(Solution, Option<f64>)> = None;
    let mut last: Option<(Solution, Option<f64>)> = None;
    let mut tried = std::collections::BTreeSet::new();
    // Bracket on the predicted loss: `ok` met the target when measured, `bad` did not.
    let (mut ok, mut bad) = (f64::NEG_INFINITY, f64::INFINITY);
    let mut goal = target;
    for _ in 0..=cfg.max_resolves {
        let s = ks.solve_max_loss(goal)?;
        if !tried.insert(s.picks.clone()) {
            break;
        }
        let mut a = attempt(ctx, &s, s.bytes)?;
        let measured = ctx.measure(&ctx.build(&s.picks))?;
        a.measured_ppl = measured;
        on_event(&MixedEvent::Solved(a.clone()));
        attempts.push(a);
        let (Some(m), Some(b)) = (measured, ctx.base_ppl) else {
            best = Some((s, measured));
            break;
        };
        let got = (m / b).ln();
        if got <= target {
            ok = ok.max(s.loss);
            if best.as_ref().is_none_or(|(x, _)| s.bytes < x.bytes) {
                best = Some((s.clone(), measured));
            }
        } else {
            bad = bad.min(s.loss);
        }
        if s.loss <= 0.0 {
            last = Some((s, measured));
            break;
        }
        // Secant: α fitted on this mix; fall back to bisection when it leaves the bracket.
        let alpha = (got / s.loss).max(1e-3);
        goal = target / alpha;
        if goal <= ok || goal >= bad {
            goal = match (ok.is_finite(), bad.is_finite()) {
                (true, true) => 0.5 * (ok + bad),
                (false, true) => 0.5 * bad,
                (true, false) => 2.0 * ok,
                (false, false) => goal,
            };
        }
        last = Some((s, measured));
    }
    // No mix met the target when measured: return the last one (its measured ΔPPL is reported).
    best.or(last)
        .ok_or_else(|| Error::invalid("no solve attempt ran"))
}
