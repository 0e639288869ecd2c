//! Which stages a pipeline run visits and which it forces (`--only`, `--from`, `--force`).

use anyhow::{Result, bail};

/// One stage the runner visits, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage<'a> {
    /// The stage's name (from the config's `order`).
    pub name: &'a str,
    /// Rerun even when up to date (`--force`, or at/after `--from`).
    pub forced: bool,
}

/// The stages a run visits and which of them are forced: `--only` keeps one stage, `--from`
/// forces a stage and every stage after it, `--force` forces all. A name that is not in `order`
/// is an error naming the order.
pub fn plan<'a>(
    order: &'a [String],
    only: Option<&str>,
    from: Option<&str>,
    force: bool,
) -> Result<Vec<PlannedStage<'a>>> {
    for name in [only, from].into_iter().flatten() {
        if !order.iter().any(|s| s == name) {
            bail!("stage `{name}` is not in this config's order {order:?}");
        }
    }
    let from_idx = from.and_then(|f| order.iter().position(|s| s == f));
    Ok(order
        .iter()
        .enumerate()
        .filter(|(_, s)| only.is_none_or(|o| o == s.as_str()))
        .map(|(idx, s)| PlannedStage {
            name: s,
            forced: force || from_idx.is_some_and(|f| idx >= f),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    fn planned(
        order: &[String],
        only: Option<&str>,
        from: Option<&str>,
        force: bool,
    ) -> Vec<String> {
        super::plan(order, only, from, force)
            .unwrap()
            .iter()
            .map(|p| format!("{}{}", p.name, if p.forced { "!" } else { "" }))
            .collect()
    }

    #[test]
    fn only_from_and_force_select_and_force_the_documented_stages() {
        let order: Vec<String> = [
            "baseline",
            "int4_native",
            "pruned",
            "mixed_precision",
            "final_report",
        ]
        .map(String::from)
        .to_vec();
        // No flags: every stage, none forced (each runs only when its fingerprint changed).
        assert_eq!(
            planned(&order, None, None, false),
            [
                "baseline",
                "int4_native",
                "pruned",
                "mixed_precision",
                "final_report"
            ]
        );
        // --from forces that stage and every later one, and visits the earlier ones unforced.
        assert_eq!(
            planned(&order, None, Some("pruned"), false),
            [
                "baseline",
                "int4_native",
                "pruned!",
                "mixed_precision!",
                "final_report!"
            ]
        );
        // --only visits one stage, unforced unless --force.
        assert_eq!(planned(&order, Some("pruned"), None, false), ["pruned"]);
        assert_eq!(planned(&order, Some("pruned"), None, true), ["pruned!"]);
        // --only with --from: the one stage, forced when it is at or after --from.
        assert_eq!(
            planned(&order, Some("pruned"), Some("int4_native"), false),
            ["pruned!"]
        );
        assert_eq!(
            planned(&order, Some("baseline"), Some("pruned"), false),
            ["baseline"]
        );
        // --force forces all.
        assert!(
            planned(&order, None, None, true)
                .iter()
                .all(|s| s.ends_with('!'))
        );
        // Unknown names are errors that list the order.
        for (only, from) in [(Some("prune"), None), (None, Some("kernel"))] {
            let err = super::plan(&order, only, from, false)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("is not in this config's order") && err.contains("int4_native"),
                "{err}"
            );
        }
    }
}
