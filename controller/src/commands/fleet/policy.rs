//! `fleet policy`: per agent, which keys may do what and which plans it accepted, as the
//! service checked them (gantry_service::policy): the effective policy each agent reports,
//! vouched for by the config digest in its own verified audit log.

use gantry_proto::v1::{AgentPolicyReview, FleetPolicyRequest};
use serde_json::{Value, json};

use super::FleetError;
use super::connect::{connect, status_error};
use crate::exit::Exit;
use crate::fleet_cli::FleetPolicyArgs;

/// `fleet policy`: 0 when every agent's policy is vouched for, 1 otherwise.
///
/// # Errors
/// [`FleetError`].
pub async fn show(args: FleetPolicyArgs) -> Result<Exit, FleetError> {
    let mut svc = connect(&args.conn).await?;
    let reviews = svc
        .fleet_policy(FleetPolicyRequest {
            agent_ids: args.agents.clone(),
        })
        .await
        .map_err(|s| status_error("FleetPolicy", &s))?
        .into_inner()
        .agents;
    for r in &reviews {
        if args.json {
            println!("{}", as_json(r));
        } else {
            print!("{}", as_text(r));
        }
    }
    Ok(if reviews.iter().all(|r| r.digest_ok) {
        Exit::Success
    } else {
        Exit::JobFailed
    })
}

fn as_json(r: &AgentPolicyReview) -> Value {
    let plans: Vec<Value> = r
        .plans
        .iter()
        .map(|p| {
            json!({
                "plan_id": p.plan_id, "plan_digest": p.plan_digest, "ring": p.ring,
                "ring_name": p.ring_name, "epoch": p.epoch, "dispatch_action": p.dispatch_action,
                "job_id": p.job_id, "app": p.app, "accepted_at": p.accepted_at, "seq": p.seq,
                "plan_signer_key_ids": p.plan_signer_key_ids,
            })
        })
        .collect();
    json!({
        "agent_id": r.agent_id,
        "digest_ok": r.digest_ok,
        "error": r.error,
        "config_digest": r.config_digest,
        "entries": r.entries,
        "policy": serde_json::from_str::<Value>(&r.policy_json).ok(),
        "plans": plans,
    })
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn list(v: &Value, key: &str) -> String {
    let items: Vec<&str> = v
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

fn as_text(r: &AgentPolicyReview) -> String {
    let mut out = String::new();
    let verdict = if r.digest_ok {
        format!("vouched for by its audit log ({} entries)", r.entries)
    } else {
        format!("NOT VOUCHED FOR: {}", r.error)
    };
    let digest = if r.config_digest.is_empty() {
        "-".to_owned()
    } else {
        format!("sha256:{}", r.config_digest)
    };
    out.push_str(&format!("{}: config {digest}: {verdict}\n", r.agent_id));
    if let Ok(policy) = serde_json::from_str::<Value>(&r.policy_json) {
        out.push_str(&format!(
            "  {:<16} {:<24} {:<14} KEY ID\n",
            "KEY", "ROLES", "STATUS"
        ));
        for k in policy
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push_str(&format!(
                "  {:<16} {:<24} {:<14} {}\n",
                text(k, "name"),
                list(k, "roles"),
                text(k, "status"),
                text(k, "key_id")
            ));
        }
        for app in policy
            .get("apps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let approvals = app.get("approvals").and_then(Value::as_u64).unwrap_or(0);
            out.push_str(&format!(
                "  app {} (approvals required: {approvals}):\n",
                text(app, "name")
            ));
            for k in app
                .get("keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let flag = |key: &str| k.get(key).and_then(Value::as_bool).unwrap_or(false);
                let mut powers = Vec::new();
                let actions = list(k, "actions");
                if actions != "-" {
                    powers.push(format!("signs {actions}"));
                }
                if flag("approves") {
                    powers.push("approves".to_owned());
                }
                if flag("signs_plans") {
                    powers.push("signs plans".to_owned());
                }
                if flag("dispatches") {
                    powers.push("dispatches".to_owned());
                }
                if !powers.is_empty() {
                    out.push_str(&format!(
                        "    {:<16} {}\n",
                        text(k, "name"),
                        powers.join("; ")
                    ));
                }
            }
        }
    }
    if r.plans.is_empty() {
        out.push_str("  plans accepted: none\n");
    } else {
        out.push_str("  plans accepted:\n");
        for p in &r.plans {
            out.push_str(&format!(
                "    {} {} ring {} ({}) epoch {} {} job {} at {} (seq {})\n",
                p.plan_id,
                p.app,
                p.ring,
                p.ring_name,
                p.epoch,
                p.dispatch_action,
                p.job_id,
                p.accepted_at,
                p.seq
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use gantry_proto::v1::AcceptedPlan;

    use super::*;

    fn review(ok: bool) -> AgentPolicyReview {
        AgentPolicyReview {
            agent_id: "web-1".to_owned(),
            policy_json: r#"{"keys":[{"name":"alice","key_id":"ed25519:aa","roles":["deployer"],"status":"valid"},
                {"name":"svc","key_id":"ed25519:bb","roles":["orchestrator"],"status":"expired"}],
              "apps":[{"name":"web","approvals":1,"keys":[
                {"name":"alice","actions":["deploy","rollback"],"approves":false,"signs_plans":true,"dispatches":false},
                {"name":"svc","actions":[],"approves":false,"signs_plans":false,"dispatches":true},
                {"name":"nobody","actions":[],"approves":false,"signs_plans":false,"dispatches":false}]}]}"#
                .to_owned(),
            config_digest: "ab".repeat(32),
            digest_ok: ok,
            error: if ok { String::new() } else { "it reports config sha256:x but …".to_owned() },
            plans: vec![AcceptedPlan {
                plan_id: "rel-1".to_owned(),
                app: "web".to_owned(),
                ring: 1,
                ring_name: "canary".to_owned(),
                epoch: 2,
                dispatch_action: "deploy".to_owned(),
                job_id: "plan-1-deploy".to_owned(),
                accepted_at: "2026-12-02T02:00:00Z".to_owned(),
                seq: 9,
                ..AcceptedPlan::default()
            }],
            entries: 12,
        }
    }

    #[test]
    fn text_names_each_key_its_powers_and_the_plans() {
        let t = as_text(&review(true));
        assert!(
            t.starts_with(&format!(
                "web-1: config sha256:{}: vouched for by its audit log (12 entries)\n",
                "ab".repeat(32)
            )),
            "{t}"
        );
        assert!(
            t.contains("\n  alice            deployer                 valid          ed25519:aa\n"),
            "{t}"
        );
        assert!(
            t.contains("\n  svc              orchestrator             expired        ed25519:bb\n"),
            "{t}"
        );
        assert!(t.contains("  app web (approvals required: 1):\n"), "{t}");
        assert!(
            t.contains("    alice            signs deploy,rollback; signs plans\n"),
            "{t}"
        );
        assert!(t.contains("    svc              dispatches\n"), "{t}");
        assert!(
            !t.contains("nobody"),
            "a key with no power on the app is left out: {t}"
        );
        assert!(
            t.contains(
                "    rel-1 web ring 1 (canary) epoch 2 deploy job plan-1-deploy at 2026-12-02T02:00:00Z (seq 9)\n"
            ),
            "{t}"
        );
    }

    #[test]
    fn an_unvouched_policy_says_why_and_json_carries_the_document() {
        let r = review(false);
        let t = as_text(&r);
        assert!(
            t.contains(": NOT VOUCHED FOR: it reports config sha256:x but …\n"),
            "{t}"
        );
        let j = as_json(&r);
        assert_eq!(j["digest_ok"], false);
        assert_eq!(j["policy"]["keys"][0]["name"], "alice");
        assert_eq!(j["plans"][0]["job_id"], "plan-1-deploy");
        let none = AgentPolicyReview {
            agent_id: "web-2".to_owned(),
            error: "cannot read its policy: refused".to_owned(),
            ..AgentPolicyReview::default()
        };
        let t = as_text(&none);
        assert_eq!(
            t,
            "web-2: config -: NOT VOUCHED FOR: cannot read its policy: refused\n  plans accepted: none\n"
        );
        assert_eq!(as_json(&none)["policy"], Value::Null);
    }
}
