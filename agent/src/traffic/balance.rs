//! Smooth weighted round-robin (the algorithm nginx uses): over any window of `sum(weights)`
//! picks each backend gets exactly its weight's share, and picks are spread out rather than
//! bunched (weights 5/1/1 give `a a b a c a a`, not `a a a a a b c`).

use std::sync::Arc;

/// One backend in rotation.
#[derive(Debug)]
struct Slot {
    id: Arc<str>,
    weight: i64,
    current: i64,
}

/// The picker for one route table; rebuilt when the table changes.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    slots: Vec<Slot>,
}

impl Balancer {
    /// A picker over `(id, weight)` pairs; zero weights are left out.
    pub(crate) fn new<'a>(backends: impl IntoIterator<Item = (&'a Arc<str>, u32)>) -> Self {
        Self {
            slots: backends
                .into_iter()
                .filter(|(_, w)| *w > 0)
                .map(|(id, w)| Slot {
                    id: Arc::clone(id),
                    weight: i64::from(w),
                    current: 0,
                })
                .collect(),
        }
    }

    /// The next backend, skipping the ids in `exclude` (backends that already refused this
    /// connection). `None` when nothing is left.
    pub(crate) fn pick(&mut self, exclude: &[Arc<str>]) -> Option<Arc<str>> {
        let mut total = 0;
        let mut best: Option<(usize, i64)> = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if exclude.iter().any(|e| **e == *slot.id) {
                continue;
            }
            slot.current += slot.weight;
            total += slot.weight;
            if best.is_none_or(|(_, current)| slot.current > current) {
                best = Some((i, slot.current));
            }
        }
        let (i, _) = best?;
        let slot = &mut self.slots[i];
        slot.current -= total;
        Some(Arc::clone(&slot.id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ids(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    fn balancer(ids: &[Arc<str>], weights: &[u32]) -> Balancer {
        Balancer::new(ids.iter().zip(weights.iter().copied()))
    }

    #[test]
    fn picks_follow_weights_exactly_over_a_full_cycle() {
        let names = ids(&["a", "b", "c"]);
        let mut b = balancer(&names, &[50, 30, 20]);
        let mut counts = BTreeMap::new();
        for _ in 0..1000 {
            *counts.entry(b.pick(&[]).unwrap().to_string()).or_insert(0) += 1;
        }
        assert_eq!(counts["a"], 500);
        assert_eq!(counts["b"], 300);
        assert_eq!(counts["c"], 200);
    }

    #[test]
    fn picks_are_spread_out_not_bunched() {
        let names = ids(&["a", "b", "c"]);
        let mut b = balancer(&names, &[5, 1, 1]);
        let seq: Vec<String> = (0..7).map(|_| b.pick(&[]).unwrap().to_string()).collect();
        assert_eq!(seq, ["a", "a", "b", "a", "c", "a", "a"]);
    }

    #[test]
    fn a_small_canary_weight_gets_its_share() {
        let names = ids(&["stable", "canary"]);
        let mut b = balancer(&names, &[99, 1]);
        let canary = (0..10_000)
            .filter(|_| &*b.pick(&[]).unwrap() == "canary")
            .count();
        assert_eq!(canary, 100);
    }

    #[test]
    fn zero_weights_are_never_picked_and_exclusions_are_honoured() {
        let names = ids(&["a", "b", "c"]);
        let mut b = balancer(&names, &[0, 1, 1]);
        for _ in 0..10 {
            assert_ne!(&*b.pick(&[]).unwrap(), "a");
        }
        let exclude = ids(&["b"]);
        for _ in 0..10 {
            assert_eq!(&*b.pick(&exclude).unwrap(), "c");
        }
        assert_eq!(b.pick(&ids(&["b", "c"])), None);
        assert!(Balancer::new(std::iter::empty()).pick(&[]).is_none());
    }
}
