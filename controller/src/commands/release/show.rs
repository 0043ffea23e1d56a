//! `gantry release show DIGEST --job FILE... --plan FILE...`: one release from signed data
//! only. From each signed job or fleet plan of the artifact: who signed it (names and roles from the agent's policy),
//! approvals with the comments their keys signed, the notes, and each gate of the evidence
//! with its values, signer and time. From the agent's audit log (hash-chained, and verified
//! with the agent's key when `--agent-pubkey` is given): where and when those jobs ran and how
//! they ended.

use std::fmt::Write as _;

use gantry_client::Agent;
use gantry_policy::config::{APPROVER_ROLE, Config, ConfigErrors};
use gantry_proto::attest::comment_signed_by;
use gantry_proto::audit_chain::verify_lines;
use gantry_proto::envelope::verify_job;
use gantry_proto::keys::{KeyError, PublicKey};

use crate::cli::ReleaseShowArgs;
use crate::commands::audit::fetch_all;
use crate::commands::history;
use crate::commands::job::release_extras_view::{self, EvidenceView};
use crate::commands::job::{JobError, JobFile};
use crate::commands::rollout::{PlanFile, RolloutError};
use crate::conn::{self, ConnError};
use crate::exit::Exit;
use crate::flags::{self, FlagError};

/// Why a release could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    /// A flag is wrong.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// A job file.
    #[error(transparent)]
    Job(#[from] JobError),
    /// A plan file.
    #[error(transparent)]
    Plan(#[from] RolloutError),
    /// The policy file.
    #[error("cannot read the policy")]
    Policy(#[source] ConfigErrors),
    /// A public key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No job or plan file is about the artifact.
    #[error("none of the job or plan files deploys artifact {digest}")]
    NotFound {
        /// The digest asked for.
        digest: String,
    },
    /// The connection flags.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// Talking to the agent.
    #[error(transparent)]
    Client(#[from] gantry_client::ClientError),
    /// Asking the controller service.
    #[error(transparent)]
    Fleet(#[from] crate::commands::fleet::FleetError),
    /// The agent's audit log does not verify under its key.
    #[error("the agent's audit log does not verify: {detail}")]
    Chain {
        /// The first bad seq and why.
        detail: String,
    },
}

impl ShowError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            ShowError::Flag(_)
            | ShowError::Job(_)
            | ShowError::Plan(_)
            | ShowError::Policy(_)
            | ShowError::Key(_)
            | ShowError::NotFound { .. } => Exit::Usage,
            ShowError::Conn(e) => e.exit(),
            ShowError::Fleet(e) => e.exit(),
            ShowError::Client(e) => e.fault().into(),
            // As `audit verify`: a log that fails verification is exit 1.
            ShowError::Chain { .. } => Exit::JobFailed,
        }
    }
}

/// A key the shower knows: from the policy (name, roles) or a `--pubkey` (its id only).
struct Known {
    key: PublicKey,
    label: String,
    approver: bool,
}

fn known_keys(args: &ReleaseShowArgs) -> Result<Vec<Known>, ShowError> {
    let mut keys = Vec::new();
    if let Some(p) = &args.policy {
        let cfg = Config::load_policy_only(p).map_err(ShowError::Policy)?;
        for k in &cfg.policy.keys {
            let roles: Vec<&str> = k.roles.iter().map(String::as_str).collect();
            keys.push(Known {
                key: k.key,
                label: format!("{} ({})", k.name, roles.join(", ")),
                approver: k.roles.contains(APPROVER_ROLE),
            });
        }
    }
    for p in &args.pubkeys {
        let key = PublicKey::read_pem_file(p)?;
        keys.push(Known {
            label: format!("key {}", key.key_id()),
            key,
            approver: false,
        });
    }
    Ok(keys)
}

/// One signed document of the release, job or plan, as `release show` prints it.
struct Signed<'a> {
    /// Its first line, without the leading newline.
    title: String,
    /// Its digest (of the job or plan bytes).
    digest: String,
    /// The signed bytes.
    payload: &'a [u8],
    signatures: &'a [gantry_proto::v1::Signature],
    comments: &'a [gantry_proto::v1::ApprovalComment],
    release: Option<&'a gantry_proto::v1::Release>,
    /// Checks one signature over `payload` under its own payload type.
    verify: Verify,
}

/// A signature check: key, signed bytes, signature.
type Verify = fn(&PublicKey, &[u8], &[u8]) -> Result<(), KeyError>;

impl<'a> Signed<'a> {
    fn job(source: &str, file: &'a JobFile) -> Self {
        let j = &file.job;
        let version = j.release.as_ref().map_or("", |r| r.version.as_str());
        Self {
            title: format!(
                "job {} ({}): {} {version} of {} for agent {}",
                j.job_id,
                source,
                gantry_proto::v1::Action::try_from(j.action)
                    .map_or("unknown", gantry_policy::job::action_name),
                j.app,
                j.agent_id
            ),
            digest: file.digest(),
            payload: &file.signed.job,
            signatures: &file.signed.signatures,
            comments: &file.signed.comments,
            release: j.release.as_ref(),
            verify: verify_job,
        }
    }

    fn plan(source: &str, file: &'a PlanFile) -> Self {
        let p = &file.plan;
        let version = p.release.as_ref().map_or("", |r| r.version.as_str());
        Self {
            title: format!(
                "plan {} ({}): deploy {version} of {} in environment {}, {} ring(s)",
                p.plan_id,
                source,
                p.app,
                if p.environment.is_empty() {
                    "(none)"
                } else {
                    p.environment.as_str()
                },
                p.rings.len()
            ),
            digest: file.digest(),
            payload: &file.signed.plan,
            signatures: &file.signed.signatures,
            comments: &file.signed.comments,
            release: p.release.as_ref(),
            verify: gantry_proto::fleet::verify_plan,
        }
    }
}

/// The text for one signed document of the release.
fn signed_text(doc: &Signed<'_>, keys: &[Known]) -> String {
    let mut out = String::new();
    let digest = &doc.digest;
    let _ = writeln!(out, "\n{}", doc.title);
    let _ = writeln!(out, "  digest     {digest}");
    let signers: Vec<&Known> = keys
        .iter()
        .filter(|k| {
            doc.signatures
                .iter()
                .any(|s| (doc.verify)(&k.key, doc.payload, &s.sig).is_ok())
        })
        .collect();
    let unknown = doc.signatures.len().saturating_sub(signers.len());
    let _ = writeln!(
        out,
        "  signed by  {}{}",
        if signers.is_empty() {
            "no key given (pass --policy or --pubkey)".to_owned()
        } else {
            signers
                .iter()
                .map(|k| k.label.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        },
        if unknown > 0 {
            format!("; {unknown} signature(s) by keys not given")
        } else {
            String::new()
        }
    );
    for k in signers.iter().filter(|k| k.approver) {
        let comments: Vec<&str> = doc
            .comments
            .iter()
            .filter(|c| comment_signed_by(c, digest, &k.key))
            .map(|c| c.comment.as_str())
            .collect();
        let _ = writeln!(
            out,
            "  approval   {}{}",
            k.label,
            if comments.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    comments
                        .iter()
                        .map(|c| format!("{c:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    if let Some(r) = doc.release {
        let pubkeys: Vec<PublicKey> = keys.iter().map(|k| k.key).collect();
        let views: Vec<EvidenceView> = release_extras_view::evidence_views(&r.evidence, &pubkeys);
        out.push_str(&release_extras_view::text(&r.notes, &views));
    }
    out
}

/// `gantry release show`.
///
/// # Errors
///
/// [`ShowError`].
pub async fn show(args: ReleaseShowArgs) -> Result<Exit, ShowError> {
    let digest = flags::sha256("DIGEST", &args.digest)?;
    let keys = known_keys(&args)?;
    let mut jobs = Vec::new();
    for p in &args.jobs {
        let f = JobFile::read(p)?;
        if f.job
            .release
            .as_ref()
            .is_some_and(|r| r.artifact_sha256 == digest)
        {
            jobs.push((p.clone(), f));
        }
    }
    let mut plans = Vec::new();
    for p in &args.plans {
        let f = PlanFile::read(p)?;
        if f.plan
            .release
            .as_ref()
            .is_some_and(|r| r.artifact_sha256 == digest)
        {
            plans.push((p.display().to_string(), f));
        }
    }
    // Without --agent, --server asks the controller service for every agent at once; its
    // rollouts' plans join the files given (a plan given as a file too is shown once).
    let fleet = match (&args.conn.agent, &args.conn.server) {
        (None, Some(_)) => Some(ask_fleet(&args, &digest).await?),
        _ => None,
    };
    if let Some(fleet) = &fleet {
        for signed in &fleet.plans {
            let Ok(plan) =
                <gantry_proto::v1::Plan as prost::Message>::decode(signed.plan.as_slice())
            else {
                continue;
            };
            let f = PlanFile {
                signed: signed.clone(),
                plan,
            };
            if !plans.iter().any(|(_, p)| p.digest() == f.digest()) {
                plans.push(("from the controller service".to_owned(), f));
            }
        }
    }
    let docs: Vec<Signed<'_>> = jobs
        .iter()
        .map(|(p, f)| Signed::job(&p.display().to_string(), f))
        .chain(plans.iter().map(|(p, f)| Signed::plan(p, f)))
        .collect();
    if docs.is_empty() {
        return Err(ShowError::NotFound { digest });
    }
    let mut out = format!("release sha256:{digest}\n");
    for doc in &docs {
        out.push_str(&signed_text(doc, &keys));
    }
    let apps: std::collections::BTreeSet<&str> = jobs
        .iter()
        .map(|(_, f)| f.job.app.as_str())
        .chain(plans.iter().map(|(_, f)| f.plan.app.as_str()))
        .collect();
    let mut failed = false;
    if let Some(fleet) = &fleet {
        let (text, all_verified) = fleet_text(&args, fleet, &apps);
        failed = !all_verified;
        out.push_str(&text);
    } else if args.conn.agent.is_some() {
        out.push_str(&deployments(&args, &docs, &apps).await?);
    } else {
        out.push_str(
            "\nwhere deployed: not asked (give --agent and the connection flags, or --server for \
             the fleet)\n",
        );
    }
    print!("{out}");
    // As `fleet audit verify`: an agent whose log cannot be verified is exit 1.
    if failed {
        return Ok(Exit::JobFailed);
    }
    Ok(Exit::Success)
}

/// The controller service's answer for `digest`: its plans and every agent's entries.
async fn ask_fleet(
    args: &ReleaseShowArgs,
    digest: &str,
) -> Result<gantry_proto::v1::ReleaseDeploymentsResponse, ShowError> {
    let conn = crate::fleet_cli::ServerConnArgs {
        server: args.conn.server.clone(),
        server_name: args.conn.server_name.clone(),
        ca: args.conn.ca.clone(),
        cert: args.conn.cert.clone(),
        cert_key: args.conn.cert_key.clone(),
    };
    let mut svc = crate::commands::fleet::connect::connect(&conn).await?;
    Ok(svc
        .release_deployments(gantry_proto::v1::ReleaseDeploymentsRequest {
            artifact_sha256: digest.to_owned(),
        })
        .await
        .map_err(|s| crate::commands::fleet::connect::status_error("ReleaseDeployments", &s))?
        .into_inner())
}

/// Each agent's part of the fleet answer, and whether every agent's log verified.
fn fleet_text(
    args: &ReleaseShowArgs,
    fleet: &gantry_proto::v1::ReleaseDeploymentsResponse,
    apps: &std::collections::BTreeSet<&str>,
) -> (String, bool) {
    let mut out = format!(
        "\nwhere deployed (every agent of the controller service at {}, each from its own audit \
         log, verified by the service: chain, checkpoints under the agent's key, witnessed \
         checkpoint)\n",
        args.conn.server.as_deref().unwrap_or("")
    );
    let mut all_verified = true;
    for agent in &fleet.agents {
        if !agent.verified {
            all_verified = false;
            let _ = writeln!(out, "  {}: NOT VERIFIED: {}", agent.agent_id, agent.error);
            continue;
        }
        let mut any = false;
        for app in apps {
            for e in history::entries(&agent.lines, app, true) {
                any = true;
                let _ = writeln!(out, "  {}: {}", agent.agent_id, entry_text(&e));
            }
        }
        if !any {
            let _ = writeln!(out, "  {}: not deployed there", agent.agent_id);
        }
    }
    if fleet.agents.is_empty() {
        out.push_str("  no agent ran a plan of it\n");
    }
    (out, all_verified)
}

/// One job's line: when it was accepted, its id, what it did and how it ended.
fn entry_text(e: &history::Entry) -> String {
    format!(
        "{}  job {}  {} {}  {}{}",
        e.accepted_ts,
        e.job_id,
        e.action,
        e.version,
        e.outcome,
        if e.ended_ts.is_empty() {
            String::new()
        } else {
            format!(" at {}", e.ended_ts)
        }
    )
}

/// Where the documents ran, from the agent's audit log: the jobs it accepted whose
/// `job_digest` is one of theirs (a fleet dispatch's is its plan's digest).
async fn deployments(
    args: &ReleaseShowArgs,
    docs: &[Signed<'_>],
    apps: &std::collections::BTreeSet<&str>,
) -> Result<String, ShowError> {
    let settings = conn::settings(&args.conn)?;
    let agent = Agent::connect(&settings).await?;
    let lines = fetch_all(&agent).await?;
    let verified = match &args.agent_pubkey {
        Some(p) => {
            let key = PublicKey::read_pem_file(p)?;
            verify_lines(&lines, Some(&key)).map_err(|e| ShowError::Chain {
                detail: e.to_string(),
            })?;
            "chain and checkpoints verified with the agent's key"
        }
        None => "not verified: give --agent-pubkey",
    };
    let digests: Vec<&str> = docs.iter().map(|d| d.digest.as_str()).collect();
    let mut ids = std::collections::BTreeSet::new();
    for line in &lines {
        if let Ok(head) = gantry_proto::audit_chain::parse_head(line.as_bytes())
            && head.event == "job.accepted"
            && head
                .fields
                .get("job_digest")
                .and_then(|v| v.as_str())
                .is_some_and(|d| digests.contains(&d))
            && let Some(id) = head.fields.get("job_id").and_then(|v| v.as_str())
        {
            ids.insert(id.to_owned());
        }
    }
    let mut out = format!(
        "\nwhere deployed (agent {}'s audit log, {verified})\n",
        settings.agent_id
    );
    let mut any = false;
    for app in apps {
        for e in history::entries(&lines, app, true)
            .iter()
            .filter(|e| ids.contains(&e.job_id))
        {
            any = true;
            let _ = writeln!(out, "  {}", entry_text(e));
        }
    }
    if !any {
        out.push_str("  not deployed there\n");
    }
    Ok(out)
}
