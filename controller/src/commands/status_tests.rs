//! `gantry status` rendering from hand-built answers.

use gantry_proto::v1::{InstanceStatus, JobSummary};

use super::*;

fn answer() -> StatusResponse {
    StatusResponse {
        agent_id: "agent-1".into(),
        apps: vec![AppStatus {
            name: "web".into(),
            version: "1.3.0".into(),
            previous_version: "1.2.0".into(),
            strategy: Strategy::Canary as i32,
            active_job_id: "web-1.3.0-1".into(),
            instances: vec![
                InstanceStatus {
                    index: 0,
                    pid: 4242,
                    port: 18080,
                    version: "1.2.0".into(),
                    state: "running".into(),
                    restarts: 0,
                    slot: "blue".into(),
                },
                InstanceStatus {
                    index: 1,
                    pid: 0,
                    port: 18085,
                    version: "1.3.0-rc.1+build.7".into(),
                    state: "starting".into(),
                    restarts: 12,
                    slot: "green".into(),
                },
            ],
            releases_on_disk: vec!["1.2.0".into(), "1.3.0".into()],
            active_slot: "blue".into(),
            rollout: "canary 50% (step 2/3), waiting for promote".into(),
            listen: "127.0.0.1:18100".into(),
            notes: String::new(),
            signals: Vec::new(),
            backends: vec![
                Backend {
                    id: "blue-0".into(),
                    addr: "127.0.0.1:18080".into(),
                    weight: 50,
                    draining: false,
                    active_connections: 3,
                    total_connections: 120_345,
                    connect_errors: 0,
                    bytes_in: 1536,
                    bytes_out: 5 << 20,
                },
                Backend {
                    id: "green-1".into(),
                    addr: "127.0.0.1:18085".into(),
                    weight: 50,
                    draining: true,
                    active_connections: 0,
                    total_connections: 7,
                    connect_errors: 2,
                    bytes_in: 0,
                    bytes_out: 100,
                },
            ],
        }],
        recent_jobs: vec![JobSummary {
            job_id: "web-1.2.0-1".into(),
            app: "web".into(),
            action: Action::Deploy as i32,
            version: "1.2.0".into(),
            outcome: Outcome::Succeeded as i32,
            reason: "release".into(),
            finished_ms: 60_000,
        }],
        audit_error: String::new(),
    }
}

#[test]
fn text_shows_slot_rollout_listen_and_backends() {
    let t = status_text(&answer());
    assert!(t.contains("\n  slot      blue (serving)\n"), "{t}");
    assert!(
        t.contains(
            "\n  rollout   canary 50% (step 2/3), waiting for promote (continue: gantry promote \
             --app web; give up: gantry abort --app web)\n"
        ),
        "{t}"
    );
    assert!(
        t.contains("\n  listen    127.0.0.1:18100 (front door)\n"),
        "{t}"
    );
    let backends: Vec<&str> = t
        .lines()
        .skip_while(|l| !l.starts_with("  BACKEND"))
        .take(3)
        .collect();
    assert_eq!(
        backends,
        vec![
            "  BACKEND ADDR            WEIGHT SHARE DRAIN    ACTIVE  TOTAL ERRORS      IN   OUT",
            "  blue-0  127.0.0.1:18080     50  100% -             3 120345      0 1.5 KiB 5 MiB",
            "  green-1 127.0.0.1:18085     50     - draining      0      7      2     0 B 100 B",
        ],
        "{t}"
    );
    let inst: Vec<&str> = t
        .lines()
        .skip_while(|l| !l.starts_with("  INST"))
        .take(3)
        .collect();
    assert_eq!(
        inst,
        vec![
            "  INST SLOT   PID  PORT VERSION            STATE    RESTARTS",
            "  0    blue  4242 18080 1.2.0              running         0",
            "  1    green    - 18085 1.3.0-rc.1+build.7 starting       12",
        ],
        "{t}"
    );
    // Columns line up: every row of a table has the same cell starts.
    assert!(
        t.contains("  FINISHED             JOB         APP ACTION VERSION OUTCOME   REASON\n"),
        "{t}"
    );
    assert!(
        t.contains("  1970-01-01T00:01:00Z web-1.2.0-1 web deploy 1.2.0   succeeded release\n"),
        "{t}"
    );
    assert!(
        !t.lines().any(|l| l.ends_with(' ')),
        "no trailing spaces:\n{t}"
    );
}

#[test]
fn an_app_without_front_door_shows_no_front_door_lines() {
    let mut s = answer();
    let a = &mut s.apps[0];
    a.active_slot.clear();
    a.rollout.clear();
    a.listen.clear();
    a.backends.clear();
    a.instances.iter_mut().for_each(|i| i.slot.clear());
    let t = status_text(&s);
    for gone in ["slot ", "rollout", "listen", "BACKEND", "backends"] {
        assert!(!t.contains(gone), "{gone:?} in\n{t}");
    }
    // No slots: no SLOT column.
    assert!(
        t.contains(
            "\n  INST  PID  PORT VERSION            STATE    RESTARTS\n  0    4242 18080 1.2.0"
        ),
        "{t}"
    );
    // A front door with no backends says so.
    s.apps[0].listen = "127.0.0.1:1".into();
    assert!(status_text(&s).contains("\n  backends  none\n"));
}

#[test]
fn a_rollout_that_names_its_command_is_shown_as_is() {
    assert_eq!(
        rollout_text("web", "waiting for promote: run gantry promote --app web"),
        "waiting for promote: run gantry promote --app web"
    );
    assert_eq!(
        rollout_text("web", "rolling batch 2/4"),
        "rolling batch 2/4"
    );
}

#[test]
fn json_carries_the_new_fields() {
    let v = status_json(&answer());
    let app = &v["apps"][0];
    assert_eq!(app["active_slot"], "blue");
    assert_eq!(app["listen"], "127.0.0.1:18100");
    assert_eq!(app["rollout"], "canary 50% (step 2/3), waiting for promote");
    assert_eq!(app["instances"][1]["slot"], "green");
    let b = &app["backends"][1];
    assert_eq!(b["id"], "green-1");
    assert_eq!(b["draining"], true);
    assert_eq!(b["connect_errors"], 2);
    assert_eq!(b["total_connections"], 7);
    assert_eq!(app["backends"][0]["bytes_out"], 5u64 << 20);
}

#[test]
fn share_is_the_weight_over_the_serving_backends() {
    let b = |id: &str, weight: u32, draining: bool| Backend {
        id: id.into(),
        weight,
        draining,
        ..Backend::default()
    };
    let all = vec![
        b("a", 4000, false),
        b("b", 4000, false),
        b("c", 2000, false),
        b("d", 5000, true),
        b("e", 0, false),
    ];
    let shares: Vec<String> = all.iter().map(|x| share(x, &all)).collect();
    assert_eq!(shares, vec!["40%", "40%", "20%", "-", "-"]);
    let thirds = vec![b("a", 1, false), b("b", 2, false)];
    assert_eq!(share(&thirds[0], &thirds), "33.3%");
}

/// Issue 10 item 11: the agent keeps the last rollout's words after its job ended, and a
/// stopped app's front door still reports its route table; neither is shown as live.
#[test]
fn a_finished_rollout_and_the_backends_of_a_stopped_app_are_not_shown_as_live() {
    let mut s = answer();
    let a = &mut s.apps[0];
    a.active_job_id.clear();
    for i in &mut a.instances {
        i.state = "stopped".into();
    }
    let text = status_text(&s);
    assert!(!text.contains("rollout"), "{text}");
    assert!(!text.contains("canary 50%"), "{text}");
    assert!(!text.contains("BACKEND"), "{text}");
    assert!(
        text.contains("backends  none serving (nothing runs; the route table still names 2)"),
        "{text}"
    );
    assert_eq!(status_json(&s)["apps"][0]["rollout"], "");
    // While a job runs, both are shown.
    let text = status_text(&answer());
    assert!(text.contains("rollout   canary 50%"), "{text}");
    assert!(text.contains("BACKEND"), "{text}");
}

#[test]
fn the_current_releases_notes_are_shown_under_the_app() {
    let mut s = answer();
    s.apps[0].notes = "# Release v1.3.0\n\n## Bug Fixes\n- no more crash\n".into();
    let text = status_text(&s);
    assert!(
        text.contains(
            "  notes\n    | # Release v1.3.0\n    | \n    | ## Bug Fixes\n    | - no more crash\n"
        ),
        "{text}"
    );
    assert_eq!(status_json(&s)["apps"][0]["notes"], s.apps[0].notes);
    assert!(!status_text(&answer()).contains("  notes"));
}
