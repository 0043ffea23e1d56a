//! A rollout's plan as the engine reads it: the signed bytes decoded once, each ring's hosts
//! resolved against the inventory, and the `max_parallel` / `min_healthy` sizes worked out.
//!
//! The service never re-encodes the plan: it keeps and forwards the exact signed bytes, and
//! decodes them only to know what to do.

use std::collections::BTreeMap;

use gantry_proto::fleet::plan_digest;
use gantry_proto::v1::{OnFailure, Plan, Ring, Selector, SignedPlan};
use prost::Message;

use crate::store::AgentRecord;

/// Why a plan cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The bytes are not a `SignedPlan` with a `Plan` inside.
    #[error("not a signed plan: {0}")]
    Decode(String),
    /// The plan carries no signature at all (it would be refused by every agent).
    #[error("plan {0} is not signed; sign it first: gantry rollout sign --key KEY PLAN")]
    Unsigned(String),
    /// A required field is empty or a value cannot be used.
    #[error("plan {plan_id}: {reason}")]
    Invalid {
        /// The plan.
        plan_id: String,
        /// What is wrong.
        reason: String,
    },
}

/// A decoded plan, with the exact signed envelope kept beside it.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    /// The envelope as handed in (forwarded to agents unchanged).
    pub signed: SignedPlan,
    /// Its decoded content.
    pub plan: Plan,
    /// Lowercase hex SHA-256 of the plan bytes.
    pub sha256: String,
}

impl LoadedPlan {
    /// Decodes and checks the shape of a `SignedPlan` encoding (signatures are the agents'
    /// business; here only that there are some).
    ///
    /// # Errors
    /// [`PlanError`].
    pub fn decode(signed_bytes: &[u8]) -> Result<Self, PlanError> {
        let signed =
            SignedPlan::decode(signed_bytes).map_err(|e| PlanError::Decode(e.to_string()))?;
        Self::from_signed(signed)
    }

    /// As [`LoadedPlan::decode`], from the envelope.
    ///
    /// # Errors
    /// [`PlanError`].
    pub fn from_signed(signed: SignedPlan) -> Result<Self, PlanError> {
        let plan =
            Plan::decode(signed.plan.as_slice()).map_err(|e| PlanError::Decode(e.to_string()))?;
        let invalid = |reason: String| PlanError::Invalid {
            plan_id: plan.plan_id.clone(),
            reason,
        };
        if plan.plan_id.is_empty() {
            return Err(PlanError::Decode("plan_id is empty".into()));
        }
        if signed.signatures.is_empty() {
            return Err(PlanError::Unsigned(plan.plan_id.clone()));
        }
        if plan.app.is_empty() {
            return Err(invalid("app is empty".into()));
        }
        if plan.rings.is_empty() {
            return Err(invalid("it has no rings".into()));
        }
        for (i, ring) in plan.rings.iter().enumerate() {
            let sel = ring.selector.clone().unwrap_or_default();
            if sel.agent_ids.is_empty() && sel.labels.is_empty() {
                return Err(invalid(format!(
                    "ring {i} selects no agents (no ids, no labels)"
                )));
            }
            Size::parse(&ring.max_parallel, Size::Count(1))
                .map_err(|e| invalid(format!("ring {i} max_parallel: {e}")))?;
            Size::parse(&ring.min_healthy, Size::Percent(100))
                .map_err(|e| invalid(format!("ring {i} min_healthy: {e}")))?;
        }
        let sha256 = plan_digest(&signed.plan);
        Ok(Self {
            signed,
            plan,
            sha256,
        })
    }

    /// Ring `i`, if the plan has it.
    pub fn ring(&self, i: u32) -> Option<&Ring> {
        self.plan.rings.get(usize::try_from(i).ok()?)
    }

    /// How many rings.
    pub fn ring_count(&self) -> u32 {
        u32::try_from(self.plan.rings.len()).unwrap_or(u32::MAX)
    }
}

/// A ring size: a count of hosts or a percent of the ring's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// This many hosts.
    Count(u32),
    /// This percent of the ring's hosts, rounded up.
    Percent(u32),
}

impl Size {
    /// Parses `"2"` or `"25%"`; empty means `default`.
    ///
    /// # Errors
    /// What is wrong with the text.
    pub fn parse(raw: &str, default: Size) -> Result<Size, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(default);
        }
        if let Some(p) = raw.strip_suffix('%') {
            return match p.trim().parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Size::Percent(p)),
                _ => Err(format!("{raw:?} is not a percent from 1% to 100%")),
            };
        }
        match raw.parse::<u32>() {
            Ok(n) => Ok(Size::Count(n)),
            Err(_) => Err(format!(
                "{raw:?} is not a count or a percent (\"2\", \"25%\")"
            )),
        }
    }

    /// The number of hosts out of `total` (a percent rounds up, so 10% of 3 hosts is 1).
    pub fn of(self, total: usize) -> usize {
        match self {
            Size::Count(n) => usize::try_from(n).unwrap_or(usize::MAX).min(total),
            Size::Percent(p) => {
                let p = usize::try_from(p).unwrap_or(100);
                (total * p).div_ceil(100)
            }
        }
    }
}

/// How many hosts of a ring deploy at once (at least one).
pub fn max_parallel(ring: &Ring, hosts: usize) -> usize {
    Size::parse(&ring.max_parallel, Size::Count(1))
        .unwrap_or(Size::Count(1))
        .of(hosts)
        .max(1)
}

/// How many hosts of a ring must end healthy for it to pass.
pub fn min_healthy(ring: &Ring, hosts: usize) -> usize {
    Size::parse(&ring.min_healthy, Size::Percent(100))
        .unwrap_or(Size::Percent(100))
        .of(hosts)
}

/// What a ring does when it fails.
pub fn on_failure(ring: &Ring) -> OnFailure {
    match OnFailure::try_from(ring.on_failure) {
        Ok(OnFailure::RollbackRing) => OnFailure::RollbackRing,
        Ok(OnFailure::RollbackAll) => OnFailure::RollbackAll,
        Ok(OnFailure::Halt | OnFailure::Unspecified) | Err(_) => OnFailure::Halt,
    }
}

/// True when an agent with this id and these labels is in the selector (the agent checks
/// the same by its own config; this is the service's view from `Info`).
pub fn selects(sel: &Selector, id: &str, labels: &BTreeMap<String, String>) -> bool {
    if sel.agent_ids.iter().any(|a| a == id) {
        return true;
    }
    !sel.labels.is_empty() && sel.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The agents of the inventory in ring `ring` of `plan`, by id. An agent listed by id is in
/// even before it answered `Info`; one selected by labels only once its labels are known.
/// Agents whose reported environment differs from the plan's are left out.
pub fn ring_hosts<'a>(
    plan: &Plan,
    ring: &Ring,
    inventory: &'a [AgentRecord],
) -> Vec<&'a AgentRecord> {
    let sel = ring.selector.clone().unwrap_or_default();
    let mut hosts: Vec<&AgentRecord> = inventory
        .iter()
        .filter(|a| selects(&sel, &a.id, &a.labels))
        .filter(|a| {
            a.environment.is_empty()
                || plan.environment.is_empty()
                || a.environment == plan.environment
        })
        .collect();
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::v1::Signature;

    fn agent(id: &str, env: &str, labels: &[(&str, &str)]) -> AgentRecord {
        AgentRecord {
            id: id.into(),
            addr: "127.0.0.1:1".into(),
            version: "0.1.0".into(),
            environment: env.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            reachable: true,
            last_seen_ms: 1,
            error: String::new(),
        }
    }

    fn ring(sel: Selector) -> Ring {
        Ring {
            name: "r".into(),
            selector: Some(sel),
            ..Ring::default()
        }
    }

    #[test]
    fn sizes_are_counts_or_percents_rounded_up() {
        assert_eq!(Size::parse("", Size::Count(1)), Ok(Size::Count(1)));
        assert_eq!(Size::parse("3", Size::Count(1)), Ok(Size::Count(3)));
        assert_eq!(Size::parse(" 25% ", Size::Count(1)), Ok(Size::Percent(25)));
        assert!(
            Size::parse("0%", Size::Count(1))
                .unwrap_err()
                .contains("1% to 100%")
        );
        assert!(Size::parse("101%", Size::Count(1)).is_err());
        assert!(
            Size::parse("two", Size::Count(1))
                .unwrap_err()
                .contains("\"25%\"")
        );
        assert_eq!(Size::Percent(10).of(3), 1);
        assert_eq!(Size::Percent(50).of(3), 2);
        assert_eq!(Size::Percent(100).of(3), 3);
        assert_eq!(Size::Count(5).of(3), 3);
        let mut r = ring(Selector::default());
        assert_eq!(max_parallel(&r, 4), 1);
        assert_eq!(min_healthy(&r, 4), 4);
        r.max_parallel = "0".into();
        assert_eq!(max_parallel(&r, 4), 1, "at least one host at a time");
        r.min_healthy = "50%".into();
        assert_eq!(min_healthy(&r, 3), 2);
    }

    #[test]
    fn selectors_match_ids_or_every_label() {
        let inv = vec![
            agent("web-3", "prod", &[("ring", "1"), ("region", "eu")]),
            agent("web-1", "prod", &[("ring", "0")]),
            agent("web-2", "prod", &[("ring", "1"), ("region", "us")]),
            agent("web-4", "staging", &[("ring", "1")]),
            agent("web-5", "", &[("ring", "1")]),
        ];
        let plan = Plan {
            environment: "prod".into(),
            ..Plan::default()
        };
        let by_label = ring(Selector {
            agent_ids: vec![],
            labels: [("ring".to_string(), "1".to_string())].into(),
        });
        let ids: Vec<&str> = ring_hosts(&plan, &by_label, &inv)
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["web-2", "web-3", "web-5"],
            "sorted, other environment left out"
        );
        let two = ring(Selector {
            agent_ids: vec![],
            labels: [
                ("ring".to_string(), "1".to_string()),
                ("region".to_string(), "eu".to_string()),
            ]
            .into(),
        });
        let ids: Vec<&str> = ring_hosts(&plan, &two, &inv)
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, ["web-3"]);
        let by_id = ring(Selector {
            agent_ids: vec!["web-1".into(), "ghost".into()],
            labels: Default::default(),
        });
        let ids: Vec<&str> = ring_hosts(&plan, &by_id, &inv)
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, ["web-1"]);
        assert!(
            !selects(&Selector::default(), "web-1", &inv[1].labels),
            "an empty selector selects nobody"
        );
    }

    #[test]
    fn plans_without_signatures_rings_or_selectors_are_refused_by_name() {
        let plan = |rings: Vec<Ring>| Plan {
            plan_id: "p1".into(),
            app: "web".into(),
            rings,
            ..Plan::default()
        };
        let signed = |p: &Plan, sigs: usize| SignedPlan {
            plan: p.encode_to_vec(),
            signatures: vec![
                Signature {
                    key_id: "k".into(),
                    sig: vec![1]
                };
                sigs
            ],
            comments: Vec::new(),
        };
        let good = plan(vec![ring(Selector {
            agent_ids: vec!["a".into()],
            labels: Default::default(),
        })]);
        let loaded = LoadedPlan::decode(&signed(&good, 1).encode_to_vec()).unwrap();
        assert_eq!(loaded.sha256, plan_digest(&good.encode_to_vec()));
        assert_eq!(loaded.ring_count(), 1);
        let e = LoadedPlan::decode(&signed(&good, 0).encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("gantry rollout sign"), "{e}");
        let e = LoadedPlan::decode(&signed(&plan(vec![]), 1).encode_to_vec()).unwrap_err();
        assert_eq!(e.to_string(), "plan p1: it has no rings");
        let e =
            LoadedPlan::decode(&signed(&plan(vec![ring(Selector::default())]), 1).encode_to_vec())
                .unwrap_err();
        assert!(e.to_string().contains("ring 0 selects no agents"), "{e}");
        let mut bad = good.clone();
        bad.rings[0].max_parallel = "lots".into();
        let e = LoadedPlan::decode(&signed(&bad, 1).encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("ring 0 max_parallel"), "{e}");
        assert!(matches!(
            LoadedPlan::decode(b"\xff\xff"),
            Err(PlanError::Decode(_))
        ));
    }
}
