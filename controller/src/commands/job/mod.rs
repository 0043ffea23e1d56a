//! `gantry job create|sign|show|submit|watch`: job files and their life on an agent.
//!
//! A job file is exactly the protobuf encoding of `gantry.v1.SignedJob`: the job's bytes, which
//! never change once created, and the signatures over them.

pub mod rollout;
pub mod spec;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_proto::envelope;
use gantry_proto::keys::{KeyError, PublicKey, SigningKey};
use gantry_proto::v1::{Job, SignedJob, health_check};
use prost::Message;
use serde_json::json;

use crate::cli::{JobCreateArgs, JobShowArgs, JobSignArgs};
use crate::exit::Exit;
use crate::flags::{self, FlagError};

/// Largest job file read (the agent's default limit is far below this).
const MAX_JOB_FILE: u64 = 1024 * 1024;

/// Why a job file could not be made, read, signed or shown.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A flag is wrong.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// The artifact could not be read.
    #[error("cannot read artifact {}", path.display())]
    ReadArtifact {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The job file could not be read.
    #[error("cannot read job file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The job file is too large to be a job.
    #[error("job file {} is {size} bytes; a job file is at most {MAX_JOB_FILE}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The job file is not a `SignedJob`, or its job bytes are not a `Job`.
    #[error("job file {} is not a gantry.v1.SignedJob ({what})", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Which layer failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: prost::DecodeError,
    },
    /// The job file could not be written.
    #[error("cannot write job file {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The agent config given to `--policy` is not valid.
    #[error("cannot evaluate the policy")]
    Policy(#[source] gantry_agent::config::ConfigErrors),
    /// `job show --policy`: the job misses requirements of that policy (they were printed).
    #[error(
        "{missing} requirement(s) of the policy in {} missing: the agent would reject job file {}",
        policy.display(),
        job.display()
    )]
    PolicyNotMet {
        /// The job file.
        job: PathBuf,
        /// The agent config.
        policy: PathBuf,
        /// How many requirements are missing.
        missing: usize,
    },
    /// The key has signed this job already.
    #[error("job file {} is already signed by key {key_id}", path.display())]
    AlreadySigned {
        /// The file.
        path: PathBuf,
        /// The key.
        key_id: String,
    },
}

impl JobError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            JobError::Flag(_)
            | JobError::ReadArtifact { .. }
            | JobError::Read { .. }
            | JobError::TooLarge { .. }
            | JobError::Decode { .. }
            | JobError::Write { .. }
            | JobError::Key(_)
            | JobError::Policy(_)
            | JobError::AlreadySigned { .. } => Exit::Usage,
            JobError::PolicyNotMet { .. } => Exit::Rejected,
        }
    }
}

/// A job file in memory: the envelope and the decoded job.
#[derive(Debug, Clone)]
pub struct JobFile {
    /// The envelope, as read.
    pub signed: SignedJob,
    /// `signed.job` decoded (for display and flow decisions; signatures cover the bytes).
    pub job: Job,
}

impl JobFile {
    /// Wraps a new job with no signatures.
    pub fn new(job: Job) -> Self {
        Self {
            signed: SignedJob {
                job: job.encode_to_vec(),
                signatures: Vec::new(),
            },
            job,
        }
    }

    /// Decodes an envelope.
    ///
    /// # Errors
    ///
    /// [`JobError::Decode`] naming `path`.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self, JobError> {
        let signed = SignedJob::decode(bytes).map_err(|source| JobError::Decode {
            path: path.to_owned(),
            what: "envelope",
            source,
        })?;
        let job = Job::decode(signed.job.as_slice()).map_err(|source| JobError::Decode {
            path: path.to_owned(),
            what: "job bytes",
            source,
        })?;
        Ok(Self { signed, job })
    }

    /// Reads and decodes a job file.
    ///
    /// # Errors
    ///
    /// [`JobError`] when it cannot be read or decoded.
    pub fn read(path: &Path) -> Result<Self, JobError> {
        let read_err = |source| JobError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_JOB_FILE {
            return Err(JobError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        Self::decode(path, &bytes)
    }

    /// Reads a job file to hand to an agent: the envelope must decode, the job bytes need not,
    /// because the agent is the judge of what it is sent (it checks signatures over the raw
    /// bytes before decoding them). When they do not decode, `job` is empty and the decode
    /// error is returned beside it.
    ///
    /// # Errors
    ///
    /// [`JobError`] when the file cannot be read or is not an envelope.
    pub fn read_for_submit(path: &Path) -> Result<(Self, Option<prost::DecodeError>), JobError> {
        match Self::read(path) {
            Ok(f) => Ok((f, None)),
            Err(JobError::Decode {
                what: "job bytes",
                source,
                ..
            }) => {
                let bytes = std::fs::read(path).map_err(|source| JobError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let signed =
                    SignedJob::decode(bytes.as_slice()).map_err(|source| JobError::Decode {
                        path: path.to_owned(),
                        what: "envelope",
                        source,
                    })?;
                Ok((
                    Self {
                        signed,
                        job: Job::default(),
                    },
                    Some(source),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the envelope atomically (temp file in the same directory, fsync, rename).
    ///
    /// # Errors
    ///
    /// [`JobError::Write`].
    pub fn write(&self, path: &Path) -> Result<(), JobError> {
        let write_err = |source| JobError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
        tmp.write_all(&self.signed.encode_to_vec())
            .map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// The job digest (SHA-256 of the exact job bytes).
    pub fn digest(&self) -> String {
        envelope::job_digest(&self.signed.job)
    }

    /// Adds `key`'s signature.
    ///
    /// # Errors
    ///
    /// [`JobError::AlreadySigned`] when `key` signed it already (by key id or by a verifying signature).
    pub fn sign(&mut self, path: &Path, key: &SigningKey) -> Result<(), JobError> {
        let key_id = key.key_id();
        let public = key.public_key();
        let dup = self.signed.signatures.iter().any(|s| {
            s.key_id == key_id.as_str()
                || envelope::verify_job(&public, &self.signed.job, &s.sig).is_ok()
        });
        if dup {
            return Err(JobError::AlreadySigned {
                path: path.to_owned(),
                key_id: key_id.to_string(),
            });
        }
        self.signed
            .signatures
            .push(envelope::sign_job(key, &self.signed.job));
        Ok(())
    }
}

/// `gantry job create`.
///
/// # Errors
///
/// [`JobError`]: a bad flag, an unreadable artifact, an unwritable file.
pub fn create(args: &JobCreateArgs) -> Result<(), JobError> {
    let artifact = args
        .artifact
        .as_deref()
        .map(|p| {
            spec::hash_file(p).map_err(|source| JobError::ReadArtifact {
                path: p.to_owned(),
                source,
            })
        })
        .transpose()?;
    let job = spec::build_job(
        &args.agent_id,
        &args.spec,
        artifact.as_ref(),
        SystemTime::now(),
    )?;
    let file = JobFile::new(job);
    file.write(&args.out)?;
    println!("wrote job {} to {}", file.job.job_id, args.out.display());
    println!("digest: {}", file.digest());
    println!("next: gantry job sign --key KEY {}", args.out.display());
    Ok(())
}

/// `gantry job sign`.
///
/// # Errors
///
/// [`JobError`]: unreadable job or key, duplicate signature, unwritable file.
pub fn sign(args: &JobSignArgs) -> Result<(), JobError> {
    let mut file = JobFile::read(&args.job)?;
    let key = SigningKey::read_pem_file(&args.key)?;
    file.sign(&args.job, &key)?;
    file.write(&args.job)?;
    println!(
        "signed job {} with key {} ({} signature{})",
        file.job.job_id,
        key.key_id(),
        file.signed.signatures.len(),
        if file.signed.signatures.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    Ok(())
}

/// `gantry job approve`: adds an approval signature (the same signature as `job sign`; the
/// agent counts it as an approval when the key holds the `approver` role).
///
/// # Errors
///
/// [`JobError`]: unreadable job or key, the key signed already, unwritable file.
pub fn approve(args: &JobSignArgs) -> Result<(), JobError> {
    let mut file = JobFile::read(&args.job)?;
    let key = SigningKey::read_pem_file(&args.key)?;
    file.sign(&args.job, &key)?;
    file.write(&args.job)?;
    print!("{}", approve_text(&file, &key.key_id().to_string()));
    Ok(())
}

/// What `job approve` prints.
pub fn approve_text(file: &JobFile, key_id: &str) -> String {
    let n = file.signed.signatures.len();
    format!(
        "approved job {} with key {key_id}\n\
         this is an approval: it counts towards the app's approvals if the agent's policy gives \
         this key the \"approver\" role (never as the deployer's own signature unless \
         deployer_may_approve = true)\n\
         the job now has {n} signature{}\n",
        file.job.job_id,
        if n == 1 { "" } else { "s" }
    )
}

/// Env for display: values of `secret_env` keys are `<secret>`.
pub fn shown_env(r: &gantry_proto::v1::Release) -> std::collections::BTreeMap<&str, &str> {
    r.env
        .iter()
        .map(|(k, v)| {
            let shown = if r.secret_env.contains(k) {
                "<secret>"
            } else {
                v.as_str()
            };
            (k.as_str(), shown)
        })
        .collect()
}

/// What `job show` says about one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigCheck {
    /// Verifies under the named key file's key.
    Valid,
    /// A key with this id was given and the signature does not verify.
    Invalid,
    /// No given key matches.
    NotChecked,
}

/// Checks each signature against the given public keys (by key id hint, then by trying all).
pub fn check_signatures(signed: &SignedJob, keys: &[PublicKey]) -> Vec<SigCheck> {
    signed
        .signatures
        .iter()
        .map(|s| {
            if keys
                .iter()
                .any(|k| envelope::verify_job(k, &signed.job, &s.sig).is_ok())
            {
                SigCheck::Valid
            } else if keys.iter().any(|k| k.key_id().as_str() == s.key_id) {
                SigCheck::Invalid
            } else {
                SigCheck::NotChecked
            }
        })
        .collect()
}

/// The decoded job as JSON (times RFC 3339), plus digest and signatures.
pub fn show_json(file: &JobFile, checks: &[SigCheck]) -> serde_json::Value {
    let j = &file.job;
    let action = gantry_proto::v1::Action::try_from(j.action).map_or("unknown", spec::action_name);
    let release = j.release.as_ref().map(|r| {
        let strategy =
            gantry_proto::v1::Strategy::try_from(r.strategy).map_or("unknown", spec::strategy_name);
        let health = r.health.as_ref().map(|h| {
            json!({
                "probe": h.probe.as_ref().map(probe_text),
                "interval_ms": h.interval_ms,
                "timeout_ms": h.timeout_ms,
                "healthy_threshold": h.healthy_threshold,
                "unhealthy_threshold": h.unhealthy_threshold,
                "deadline_ms": h.deadline_ms,
            })
        });
        let env = shown_env(r);
        json!({
            "version": r.version,
            "artifact_sha256": r.artifact_sha256,
            "artifact_size": r.artifact_size,
            "strategy": strategy,
            "instances": r.instances,
            "command": r.command,
            "health": health,
            "env": env,
            "secret_env": r.secret_env,
            "progress_deadline_secs": r.progress_deadline_secs,
            "rollout": rollout::rollout_json(r.rollout.as_ref()),
        })
    });
    let sigs: Vec<_> = file
        .signed
        .signatures
        .iter()
        .zip(checks)
        .map(|(s, c)| {
            let verified = match c {
                SigCheck::Valid => json!(true),
                SigCheck::Invalid => json!(false),
                SigCheck::NotChecked => serde_json::Value::Null,
            };
            json!({"key_id": s.key_id, "verified": verified})
        })
        .collect();
    json!({
        "job_id": j.job_id,
        "agent_id": j.agent_id,
        "app": j.app,
        "action": action,
        "issued_at": flags::format_unix(j.issued_at),
        "not_before": flags::format_unix(j.not_before),
        "expires_at": flags::format_unix(j.expires_at),
        "release": release,
        "reason": j.reason,
        "digest": file.digest(),
        "job_bytes": file.signed.job.len(),
        "signatures": sigs,
    })
}

/// A probe as the `--health` flag spells it.
pub fn probe_text(p: &health_check::Probe) -> String {
    match p {
        health_check::Probe::Http(h) if h.expect_status != 0 => {
            format!("http:{}={}", h.path, h.expect_status)
        }
        health_check::Probe::Http(h) => format!("http:{}", h.path),
        health_check::Probe::Tcp(_) => "tcp".to_owned(),
        health_check::Probe::Exec(e) => format!("exec:{}", e.command.join(" ")),
    }
}

/// The decoded job for people.
pub fn show_text(file: &JobFile, checks: &[SigCheck], now: i64) -> String {
    use std::fmt::Write as _;
    let j = &file.job;
    let mut out = String::new();
    let action = gantry_proto::v1::Action::try_from(j.action).map_or("unknown", spec::action_name);
    let _ = writeln!(out, "job        {}", j.job_id);
    let _ = writeln!(out, "agent      {}", j.agent_id);
    let _ = writeln!(out, "app        {}", j.app);
    let _ = writeln!(out, "action     {action}");
    let _ = writeln!(
        out,
        "issued     {} ({})",
        flags::format_unix(j.issued_at),
        flags::relative(j.issued_at, now)
    );
    let _ = writeln!(
        out,
        "not before {} ({})",
        flags::format_unix(j.not_before),
        flags::relative(j.not_before, now)
    );
    let expiry = if j.expires_at > now {
        format!("expires {}", flags::relative(j.expires_at, now))
    } else {
        format!("EXPIRED {}", flags::relative(j.expires_at, now))
    };
    let _ = writeln!(
        out,
        "expires    {} ({expiry})",
        flags::format_unix(j.expires_at)
    );
    if !j.reason.is_empty() {
        let _ = writeln!(out, "reason     {}", j.reason);
    }
    if let Some(r) = &j.release {
        let strategy =
            gantry_proto::v1::Strategy::try_from(r.strategy).map_or("unknown", spec::strategy_name);
        let _ = writeln!(out, "version    {}", r.version);
        if !r.artifact_sha256.is_empty() {
            let _ = writeln!(
                out,
                "artifact   sha256:{} ({} bytes)",
                r.artifact_sha256, r.artifact_size
            );
            let _ = writeln!(out, "strategy   {strategy}");
            let rows = rollout::rollout_rows(
                gantry_proto::v1::Strategy::try_from(r.strategy)
                    .unwrap_or(gantry_proto::v1::Strategy::Unspecified),
                r.rollout.as_ref(),
            );
            let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
            for (i, (label, value)) in rows.iter().enumerate() {
                let head = if i == 0 { "rollout" } else { "" };
                let _ = writeln!(out, "{head:<10} {label:<width$}  {value}");
            }
            let _ = writeln!(out, "instances  {}", r.instances);
            let _ = writeln!(out, "command    {}", r.command.join(" "));
            if let Some(h) = &r.health {
                let _ = writeln!(
                    out,
                    "health     {} every {}ms, timeout {}ms, healthy after {}, unhealthy after {}, deadline {}ms",
                    h.probe
                        .as_ref()
                        .map_or_else(|| "none".to_owned(), probe_text),
                    h.interval_ms,
                    h.timeout_ms,
                    h.healthy_threshold,
                    h.unhealthy_threshold,
                    h.deadline_ms
                );
            }
            for (k, v) in shown_env(r) {
                let _ = writeln!(out, "env        {k}={v}");
            }
            let _ = writeln!(
                out,
                "deadline   {}s for the whole job",
                r.progress_deadline_secs
            );
        }
    }
    let _ = writeln!(out, "digest     {}", file.digest());
    if file.signed.signatures.is_empty() {
        let _ = writeln!(
            out,
            "signatures none (sign with: gantry job sign --key KEY FILE)"
        );
    } else {
        let _ = writeln!(out, "signatures {}", file.signed.signatures.len());
        for (s, c) in file.signed.signatures.iter().zip(checks) {
            let verdict = match c {
                SigCheck::Valid => "valid",
                SigCheck::Invalid => "INVALID",
                SigCheck::NotChecked => "not checked (no matching --pubkey)",
            };
            let _ = writeln!(out, "  key {}  {verdict}", s.key_id);
        }
    }
    out
}

/// `gantry job show`.
///
/// # Errors
///
/// [`JobError`]: unreadable job or public key files; [`JobError::PolicyNotMet`] (exit 3) when
/// `--policy` finds a requirement missing.
pub fn show(args: &JobShowArgs) -> Result<(), JobError> {
    let file = JobFile::read(&args.job)?;
    let keys = args
        .pubkeys
        .iter()
        .map(|p| PublicKey::read_pem_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let now = flags::unix_secs(SystemTime::now());
    let policy = args
        .policy
        .as_deref()
        .map(|p| {
            gantry_agent::config::Config::load_policy_only(p)
                .map(|cfg| (p.to_owned(), cfg))
                .map_err(JobError::Policy)
        })
        .transpose()?;
    // The policy's trusted keys check signatures too.
    let mut keys = keys;
    if let Some((_, cfg)) = &policy {
        keys.extend(cfg.policy.keys.iter().map(|k| k.key));
    }
    let checks = check_signatures(&file.signed, &keys);
    let reqs = policy.as_ref().map(|(_, cfg)| evaluate(&file, cfg, now));
    if args.json {
        let mut doc = show_json(&file, &checks);
        if let (Some((path, cfg)), Some(reqs)) = (&policy, &reqs) {
            doc["policy"] = policy_json(path, cfg, reqs);
        }
        println!("{doc}");
    } else {
        print!("{}", show_text(&file, &checks, now));
        if let (Some((path, cfg)), Some(reqs)) = (&policy, &reqs) {
            print!("{}", policy_text(path, cfg, reqs));
        }
    }
    match (&policy, &reqs) {
        (Some((path, _)), Some(reqs)) if reqs.iter().any(|r| !r.met) => {
            Err(JobError::PolicyNotMet {
                job: args.job.clone(),
                policy: path.clone(),
                missing: reqs.iter().filter(|r| !r.met).count(),
            })
        }
        _ => Ok(()),
    }
}

/// Evaluates the job file against an agent's policy at `now`, with the agent's own checks.
pub fn evaluate(
    file: &JobFile,
    cfg: &gantry_agent::config::Config,
    now: i64,
) -> Vec<gantry_agent::admission::explain::Requirement> {
    let sigs: Vec<gantry_agent::admission::SignatureIn> = file
        .signed
        .signatures
        .iter()
        .map(|s| gantry_agent::admission::SignatureIn {
            key_id_hint: s.key_id.clone(),
            sig: s.sig.clone(),
        })
        .collect();
    gantry_agent::admission::explain::explain(
        &cfg.policy,
        &cfg.limits,
        &cfg.agent_id,
        &file.signed.job,
        &sigs,
        now,
    )
}

/// The `--policy` section of `job show`: each requirement, met or missing, then a verdict.
pub fn policy_text(
    path: &Path,
    cfg: &gantry_agent::config::Config,
    reqs: &[gantry_agent::admission::explain::Requirement],
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy     {} (agent {})",
        path.display(),
        cfg.agent_id
    );
    let width = reqs.iter().map(|r| r.name.len()).max().unwrap_or(0);
    for r in reqs {
        let mark = if r.met { "met    " } else { "MISSING" };
        let _ = writeln!(out, "  {mark}  {:<width$}  {}", r.name, r.detail);
    }
    let missing = reqs.iter().filter(|r| !r.met).count();
    if missing == 0 {
        out.push_str(
            "verdict    the agent's policy admits this job (the agent still checks replay, \
             downgrade and a busy app)\n",
        );
    } else {
        let _ = writeln!(
            out,
            "verdict    {missing} requirement(s) missing: the agent would reject this job"
        );
    }
    out
}

/// The `--policy` section as JSON.
pub fn policy_json(
    path: &Path,
    cfg: &gantry_agent::config::Config,
    reqs: &[gantry_agent::admission::explain::Requirement],
) -> serde_json::Value {
    let items: Vec<_> = reqs
        .iter()
        .map(|r| json!({"name": r.name, "met": r.met, "detail": r.detail}))
        .collect();
    json!({
        "config": path.display().to_string(),
        "agent_id": cfg.agent_id,
        "admissible": reqs.iter().all(|r| r.met),
        "requirements": items,
    })
}

#[cfg(test)]
mod tests;
