//! `gantry quickstart --fleet`: four local agents in three rings (each its own process, data
//! dir, certificate and labels), a local controller service over them, one plan signed by the
//! deployer and run ring by ring with bakes; the progress as the service reports it, then
//! `fleet ls`, `fleet policy` and `fleet audit verify`; then clean-up.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use gantry_client::{Agent, ConnSettings};
use gantry_proto::keys::{self, SigningKey};
use gantry_proto::v1::{Action, GetRolloutRequest, RolloutStatus};

use super::agent_process::{Daemon, http_get, locate, start_agent, start_service};
use super::workspace::{
    APP, agent_config, agent_config_text, free_front_door_port, free_port_range, instance_user, io,
    package_sample, work_dir,
};
use super::{QuickstartError, sample_spec};
use crate::cli::{ActionArgs, ConnArgs, QuickstartArgs, RolloutPlanArgs};
use crate::commands::dev_pki::{self, PkiPaths};
use crate::commands::fleet::{FleetError, inventory, policy, rollout};
use crate::commands::job::{JobFile, action_job};
use crate::commands::rollout::PlanFile;
use crate::commands::rollout::plan::build_plan;
use crate::commands::submit::submit_and_follow;
use crate::exit::Exit;
use crate::fleet_cli::{FleetLsArgs, FleetPolicyArgs, ServerConnArgs};
use crate::output::{Events, Mode};

/// The agents and the ring each is labelled for.
const AGENTS: [(&str, &str); 4] = [
    ("web-1", "0"),
    ("web-2", "1"),
    ("web-3", "2"),
    ("web-4", "2"),
];
/// The environment every agent and the plan name.
const ENVIRONMENT: &str = "production";
/// The plan's id (and so the rollout's).
const PLAN_ID: &str = "quickstart-fleet-1.0.0";
/// The role the orchestrator key holds in each agent's policy (the app's `allow.dispatch`).
const ORCHESTRATOR_ROLE: &str = "orchestrator";
/// How long the whole rollout may take before quickstart gives up.
const ROLLOUT_DEADLINE: Duration = Duration::from_secs(90);

/// One local agent.
struct Member {
    id: &'static str,
    dir: PathBuf,
    addr: SocketAddr,
    front_door: SocketAddr,
    daemon: Daemon,
}

/// `gantry quickstart --fleet`.
///
/// # Errors
///
/// [`QuickstartError`] naming the step that failed.
pub fn run(args: &QuickstartArgs) -> Result<Exit, QuickstartError> {
    let agent_bin = locate(args.agent_bin.as_deref(), "gantry-agent", "--agent-bin")?;
    let sample_bin = locate(
        args.sample_app.as_deref(),
        "gantry-sample-app",
        "--sample-app",
    )?;
    let gantry_bin = std::env::current_exe().map_err(|source| QuickstartError::Runtime {
        dir: PathBuf::from("."),
        source,
    })?;
    let dir = work_dir(args.dir.as_deref())?;
    println!("quickstart directory: {}", dir.display());

    // The service presents the CA's "agent" certificate (named gantry-server) to operators and
    // the "controller" client certificate to the agents; each agent has its own certificate;
    // the operator is "ops".
    let pki_dir = dir.join("pki");
    let pki = dev_pki::generate_pki(&pki_dir, "gantry-server", "controller")?;
    let ops = dev_pki::add_client(&pki_dir, "ops")?;
    let keys_dir = dir.join("keys");
    fs::create_dir_all(&keys_dir).map_err(io("create", &keys_dir))?;
    let (deployer, _, _) = keys::write_keypair(&keys_dir.join("deployer"))?;
    keys::write_keypair(&keys_dir.join("orchestrator"))?;
    println!(
        "made a CA, a certificate per agent, the service's and the operator's in {}; the deployer and orchestrator keys in {}",
        pki_dir.display(),
        keys_dir.display()
    );

    let v1 = dir.join("sample-1.0.0.tar.gz");
    package_sample(
        &sample_bin,
        "Gantry sample app, release 1.0.0, rolled out ring by ring\n",
        &v1,
    )
    .map_err(io("write", &v1))?;

    let user = instance_user();
    let mut claims = Vec::new();
    let mut members = Vec::new();
    for (id, ring) in AGENTS {
        let agent_dir = dir.join("agents").join(id);
        let certs = dev_pki::add_agent(&pki_dir, id)?;
        fs::create_dir_all(agent_dir.join("keys")).map_err(io("create", &agent_dir))?;
        keys::write_keypair(&agent_dir.join("keys").join("agent"))?;
        // Held until quickstart ends, so that the agents (and a second quickstart) never
        // share ports.
        let ports = free_port_range()?;
        let front_door_port = free_front_door_port(ports.start)?;
        let config = member_config(
            id,
            ring,
            &MemberFiles {
                pki: &pki.paths,
                cert: &certs.cert,
                key: &certs.key,
                keys: &keys_dir,
            },
            ports.start,
            front_door_port,
            &user,
            &pki.controller_fingerprint,
        )?;
        let config_path = agent_dir.join("agent.toml");
        fs::write(&config_path, config).map_err(io("write", &config_path))?;
        claims.push(ports);
        let (daemon, addr) = start_agent(&agent_bin, &agent_dir)?;
        println!(
            "agent {id} (ring={ring}, environment {ENVIRONMENT}) listening on {addr}; app {APP} behind 127.0.0.1:{front_door_port}"
        );
        members.push(Member {
            id,
            dir: agent_dir,
            addr,
            front_door: SocketAddr::from(([127, 0, 0, 1], front_door_port)),
            daemon,
        });
    }

    let server_dir = dir.join("server");
    fs::create_dir_all(&server_dir).map_err(io("create", &server_dir))?;
    let controller_toml = server_dir.join("controller.toml");
    fs::write(
        &controller_toml,
        service_config(&server_dir, &keys_dir, &pki.paths, &members),
    )
    .map_err(io("write", &controller_toml))?;
    let (mut service, service_addr) = start_service(&gantry_bin, &server_dir)?;
    println!(
        "controller service listening on {service_addr} (config {}, log {})",
        controller_toml.display(),
        server_dir.join("server.log").display()
    );
    let conn = ServerConnArgs {
        server: Some(service_addr.to_string()),
        server_name: "gantry-server".to_owned(),
        ca: Some(pki.paths.ca.clone()),
        cert: Some(ops.cert.clone()),
        cert_key: Some(ops.key.clone()),
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| QuickstartError::Runtime {
            dir: dir.clone(),
            source,
        })?;
    let plan_path = dir.join(format!("{PLAN_ID}.plan"));
    let result = rt.block_on(async {
        write_plan(&plan_path, &v1, &keys_dir, &deployer)?;
        println!(
            "\n== rollout start {} (signed by the deployer)",
            plan_path.display()
        );
        fleet_step(
            rollout::start(crate::fleet_cli::RolloutStartArgs {
                conn: conn.clone(),
                plan: plan_path.clone(),
                artifact: Some(v1.clone()),
                json: false,
            })
            .await,
            "rollout start",
        )?;
        follow(&conn).await?;
        for m in &members {
            let (code, body) =
                http_get(m.front_door, "/").map_err(|source| QuickstartError::Http {
                    addr: m.front_door,
                    path: "/",
                    source,
                })?;
            println!(
                "{}: GET http://{}/ -> {code} {}",
                m.id,
                m.front_door,
                body.trim_end()
            );
        }
        println!("\n== fleet ls");
        fleet_step(
            inventory::ls(FleetLsArgs {
                conn: conn.clone(),
                json: false,
            })
            .await,
            "fleet ls",
        )?;
        println!("\n== fleet policy (which keys may do what, per agent)");
        fleet_step(
            policy::show(FleetPolicyArgs {
                conn: conn.clone(),
                agents: Vec::new(),
                json: false,
            })
            .await,
            "fleet policy",
        )?;
        println!("\n== fleet audit verify");
        fleet_step(
            inventory::verify(FleetLsArgs {
                conn: conn.clone(),
                json: false,
            })
            .await,
            "fleet audit verify",
        )?;
        if !args.keep_running {
            stop_apps(&members, &pki.paths, &dir, &deployer).await?;
        }
        Ok::<(), QuickstartError>(())
    });
    if let Err(e) = result {
        // No process left behind: the apps outlive their agents, so stop them first.
        if rt
            .block_on(stop_apps(&members, &pki.paths, &dir, &deployer))
            .is_err()
        {
            for m in &members {
                super::kill_recorded_processes(&m.dir.join("data").join("apps").join(APP));
            }
        }
        return Err(e);
    }
    drop(claims);
    if args.keep_running {
        println!();
        if let Some(pid) = service.keep() {
            println!("the controller service keeps running (pid {pid})");
        }
        for m in &mut members {
            if let Some(pid) = m.daemon.keep() {
                println!("agent {} keeps running (pid {pid})", m.id);
            }
        }
    } else {
        let stopped = service.stop();
        for m in &mut members {
            m.daemon.stop();
        }
        if let Some(status) = stopped {
            println!("\nstopped the controller service ({status}) and the four agents");
        }
    }
    print_next_steps(&dir, &conn, args.keep_running);
    Ok(Exit::Success)
}

/// The files an agent's config names.
struct MemberFiles<'a> {
    pki: &'a PkiPaths,
    cert: &'a Path,
    key: &'a Path,
    keys: &'a Path,
}

/// Quickstart's single-agent config, made a fleet member: its own id and certificate, the
/// environment and its ring label, the orchestrator key trusted to dispatch the app.
#[allow(clippy::too_many_arguments)] // one call site, each a distinct fact of the member
fn member_config(
    id: &str,
    ring: &str,
    files: &MemberFiles<'_>,
    first_port: u16,
    front_door_port: u16,
    user: &str,
    controller_fingerprint: &str,
) -> Result<String, QuickstartError> {
    let path = |p: &Path| p.display().to_string();
    let mut raw = agent_config(first_port, front_door_port, user, controller_fingerprint);
    raw.agent_id = id.to_owned();
    raw.tls.ca = path(&files.pki.ca);
    raw.tls.cert = path(files.cert);
    raw.tls.key = path(files.key);
    if let Some(k) = raw.key_mut("deployer") {
        k.public_key = path(&files.keys.join("deployer.pub"));
    }
    raw = raw.key(
        "orchestrator",
        &path(&files.keys.join("orchestrator.pub")),
        &[ORCHESTRATOR_ROLE],
    );
    if let Some(app) = raw.apps.remove(APP) {
        raw.apps
            .insert(APP.to_owned(), app.allow_dispatch(&[ORCHESTRATOR_ROLE]));
    }
    raw.environment = Some(ENVIRONMENT.to_owned());
    raw.labels = BTreeMap::from([("ring".to_owned(), ring.to_owned())]);
    Ok(agent_config_text(&raw)?)
}

/// controller.toml: loopback, the embedded store, the operator "ops", each agent by address.
fn service_config(dir: &Path, keys: &Path, pki: &PkiPaths, members: &[Member]) -> String {
    let mut text = format!(
        "# Written by `gantry quickstart --fleet` (docs/fleet.md has the reference).\n\
         listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nreplica_id = \"quickstart\"\n\
         orchestrator_key = \"{}\"\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
         client_names = [\"ops\"]\nclient_cert = \"{}\"\nclient_key = \"{}\"\n\n\
         [engine]\npoll = \"200ms\"\nretry = \"500ms\"\nrefresh = \"2s\"\n",
        dir.join("data").display(),
        keys.join("orchestrator.key").display(),
        pki.ca.display(),
        pki.agent.display(),
        pki.agent_key.display(),
        pki.controller.display(),
        pki.controller_key.display(),
    );
    for m in members {
        text.push_str(&format!(
            "\n[[agents]]\nid = \"{}\"\naddr = \"{}\"\n",
            m.id, m.addr
        ));
    }
    text
}

/// The plan: the sample app 1.0.0, hot, one instance per host; ring 0 (web-1) bakes 2 s, ring
/// 1 (web-2) 2 s, ring 2 (web-3, web-4) both at once.
fn write_plan(
    path: &Path,
    artifact: &Path,
    keys: &Path,
    deployer: &SigningKey,
) -> Result<(), QuickstartError> {
    let mut spec = sample_spec("1.0.0");
    spec.reason = "quickstart --fleet: 1.0.0 ring by ring".to_owned();
    let args = RolloutPlanArgs {
        out: path.to_owned(),
        plan_id: Some(PLAN_ID.to_owned()),
        environment: ENVIRONMENT.to_owned(),
        rings: vec![
            "name=canary,labels=ring:0,bake=2s,on_failure=rollback_ring".to_owned(),
            "name=early,labels=ring:1,bake=2s,on_failure=rollback_all".to_owned(),
            "name=everyone,labels=ring:2,max_parallel=2,on_failure=rollback_all".to_owned(),
        ],
        rings_file: None,
        artifact: Some(artifact.to_owned()),
        spec,
    };
    let mut file = PlanFile::new(build_plan(&args, SystemTime::now())?);
    file.sign(&keys.join("deployer.key"), deployer)?;
    file.write(path)?;
    println!(
        "wrote {} (3 rings: canary web-1 bake 2s, early web-2 bake 2s, everyone web-3 and web-4)",
        path.display()
    );
    Ok(())
}

/// A fleet command's outcome as a quickstart step: anything but success stops quickstart.
fn fleet_step(result: Result<Exit, FleetError>, what: &str) -> Result<(), QuickstartError> {
    match result? {
        Exit::Success => Ok(()),
        other => Err(QuickstartError::FleetStep {
            what: what.to_owned(),
            exit: other as u8,
        }),
    }
}

/// Prints each host's step and each ring's bake as the service reports them, until the
/// rollout ends; then its final status.
async fn follow(conn: &ServerConnArgs) -> Result<(), QuickstartError> {
    let mut svc = crate::commands::fleet::connect::connect(conn).await?;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut baking: Option<u32> = None;
    let deadline = Instant::now() + ROLLOUT_DEADLINE;
    loop {
        let s: RolloutStatus = svc
            .get_rollout(GetRolloutRequest {
                rollout_id: PLAN_ID.to_owned(),
            })
            .await
            .map_err(|s| crate::commands::fleet::connect::status_error("GetRollout", &s))?
            .into_inner();
        for ring in &s.rings {
            for h in &ring.hosts {
                let step = format!("{} {}", h.action, h.step);
                if seen.get(&h.agent_id) != Some(&step) {
                    println!("ring {} {}: {} {step}", ring.index, ring.name, h.agent_id);
                    seen.insert(h.agent_id.clone(), step);
                }
            }
        }
        if s.bake_left_ms > 0 && baking != Some(s.ring) {
            println!(
                "ring {} baking for {:.1}s",
                s.ring,
                f64::from(u32::try_from(s.bake_left_ms).unwrap_or(u32::MAX)) / 1000.0
            );
            baking = Some(s.ring);
        }
        if rollout::is_final(&s.state) {
            println!("\n{}", rollout::status_text(&s).trim_end());
            return if s.state == "succeeded" {
                Ok(())
            } else {
                Err(QuickstartError::RolloutEnded {
                    state: s.state,
                    reason: s.reason,
                })
            };
        }
        if Instant::now() > deadline {
            return Err(QuickstartError::RolloutEnded {
                state: format!("still {} after {}s", s.state, ROLLOUT_DEADLINE.as_secs()),
                reason: s.reason,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops the sample app on every agent with a signed stop job, straight to the agent.
async fn stop_apps(
    members: &[Member],
    pki: &PkiPaths,
    dir: &Path,
    deployer: &SigningKey,
) -> Result<(), QuickstartError> {
    println!("\n== stop {APP} on each agent (instances outlive the agents, so stop them first)");
    for m in members {
        let args = ActionArgs {
            conn: ConnArgs::default(),
            keys: Vec::new(),
            app: APP.to_owned(),
            reason: "quickstart --fleet: clean up".to_owned(),
            valid_for: "15m".to_owned(),
            json: false,
        };
        let mut file = JobFile::new(action_job(
            m.id,
            &args,
            Action::Stop,
            None,
            SystemTime::now(),
        )?);
        file.sign(&dir.join("keys").join("deployer.key"), deployer)?;
        let agent = Agent::connect(&ConnSettings {
            addr: m.addr.to_string(),
            agent_id: m.id.to_owned(),
            ca: pki.ca.clone(),
            cert: pki.controller.clone(),
            cert_key: pki.controller_key.clone(),
            // The witness lives with these throw-away agents, not in the user's state dir.
            witness_dir: Some(dir.join("state")),
            via: None,
        })
        .await?;
        let mut out = Events::new(Mode::detect(false));
        let exit = submit_and_follow(&agent, &file, &mut out).await?;
        if exit != Exit::Success {
            return Err(QuickstartError::FleetStep {
                what: format!("stop {APP} on {}", m.id),
                exit: exit as u8,
            });
        }
    }
    Ok(())
}

fn print_next_steps(dir: &Path, conn: &ServerConnArgs, running: bool) {
    let d = dir.display();
    println!("\nnext steps:");
    if !running {
        println!(
            "  # start it all again: each agent with gantry-agent run --config {d}/agents/ID/agent.toml,"
        );
        println!("  # then gantry server --config {d}/server/controller.toml");
    }
    println!("  # point the CLI at the service:");
    println!(
        "  export GANTRY_SERVER={} GANTRY_CA={} GANTRY_CERT={} GANTRY_CERT_KEY={}",
        conn.server.as_deref().unwrap_or("ADDR"),
        conn.ca
            .as_deref()
            .map(Path::display)
            .map_or_else(String::new, |p| p.to_string()),
        conn.cert
            .as_deref()
            .map(Path::display)
            .map_or_else(String::new, |p| p.to_string()),
        conn.cert_key
            .as_deref()
            .map(Path::display)
            .map_or_else(String::new, |p| p.to_string()),
    );
    println!("  gantry rollout status {PLAN_ID}");
    println!("  gantry fleet ls");
    println!("  gantry fleet audit tail --last 5");
    println!(
        "  # a new release: gantry rollout plan --out next.plan --plan-id rel-1.1.0 --environment {ENVIRONMENT} --app {APP} --version 1.1.0 --artifact FILE --ring 'name=canary,ids=web-1,bake=10s' --ring 'name=rest,ids=web-2;web-3;web-4' --health http:/health -- bin/gantry-sample-app"
    );
    println!(
        "  #   gantry rollout sign --key {d}/keys/deployer.key next.plan && gantry rollout start next.plan --artifact FILE"
    );
}
