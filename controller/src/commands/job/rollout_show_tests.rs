//! How `job show` prints a rollout: rows with given values and defaults, and the JSON form.

use super::*;

fn text(strategy: Strategy, r: Option<&Rollout>) -> String {
    rollout_rows(strategy, r)
        .into_iter()
        .map(|(l, v)| format!("{l}: {v}\n"))
        .collect()
}

#[test]
fn rows_show_given_values_and_defaults() {
    assert!(rollout_rows(Strategy::Hot, None).is_empty());
    let t = text(
        Strategy::Rolling,
        Some(&Rollout {
            batch: "25%".into(),
            min_healthy_time_ms: 10_000,
            no_auto_revert: true,
            ..Rollout::default()
        }),
    );
    assert_eq!(
        t,
        "batch: 25%\n\
         min healthy time: 10s\n\
         healthy deadline: default (the health check's deadline)\n\
         auto-revert: off: updated instances stay on the new release on failure\n\
         drain timeout: default (30s)\n"
    );
    let watched = Rollout {
        watch_ms: 8_000,
        ..Rollout::default()
    };
    assert_eq!(text(Strategy::Hot, Some(&watched)), "watch: 8s\n");
    assert!(text(Strategy::Canary, Some(&watched)).ends_with("watch: 8s\n"));
    let t = text(Strategy::Rolling, None);
    assert!(t.starts_with("batch: default (1)\n"), "{t}");
    assert!(t.contains("auto-revert: on\n"), "{t}");

    let t = text(
        Strategy::BlueGreen,
        Some(&Rollout {
            preview_weight: 10,
            manual_promote: true,
            scale_down_delay_ms: 5_000,
            ..Rollout::default()
        }),
    );
    assert!(
        t.contains("preview: 10% of new connections until gantry promote\n"),
        "{t}"
    );
    assert!(
        t.contains("promotion: manual: waits for gantry promote\n"),
        "{t}"
    );
    assert!(t.contains("scale-down delay: 5s\n"), "{t}");
    assert!(!t.contains("batch"), "{t}");
    assert!(
        text(Strategy::BlueGreen, None).contains("preview: none\npromotion: automatic"),
        "{}",
        text(Strategy::BlueGreen, None)
    );

    let t = text(
        Strategy::Canary,
        Some(&Rollout {
            steps: vec![
                CanaryStep {
                    weight: 10,
                    pause_ms: 30_000,
                    until_promote: false,
                    flag_percent: None,
                },
                CanaryStep {
                    weight: 50,
                    pause_ms: 0,
                    until_promote: true,
                    flag_percent: None,
                },
            ],
            analysis: Some(Analysis {
                max_cpu_percent: 80.0,
                max_memory_bytes: 256 << 20,
                ..Analysis::default()
            }),
            ..Rollout::default()
        }),
    );
    for want in [
        "canary instances: default (1)\n",
        "step 1: 10% for 30s\n",
        "step 2: 50% until gantry promote\n",
        "analysis every: default (1s)\n",
        "max probe failures: default (3)\n",
        "max restarts: 0\n",
        "max conn errors: default (5)\n",
        "max cpu: 80% of one core\n",
        "max memory: 256 MiB (268435456 bytes)\n",
    ] {
        assert!(t.contains(want), "{want:?} in\n{t}");
    }
    assert!(
        text(Strategy::Canary, None).contains("steps: default (10% for 30s, 50% for 30s, 100%)")
    );
}

#[test]
fn json_carries_the_wire_fields() {
    assert_eq!(rollout_json(None), serde_json::Value::Null);
    let v = rollout_json(Some(&Rollout {
        batch: "2".into(),
        steps: vec![CanaryStep {
            weight: 5,
            pause_ms: 0,
            until_promote: true,
            flag_percent: None,
        }],
        analysis: Some(Analysis {
            max_memory_bytes: 1024,
            ..Analysis::default()
        }),
        ..Rollout::default()
    }));
    assert_eq!(v["batch"], "2");
    assert_eq!(
        v["steps"],
        json!([{"weight": 5, "pause_ms": 0, "until_promote": true, "flag_percent": null}])
    );
    assert_eq!(v["analysis"]["max_memory_bytes"], 1024);
    assert_eq!(v["manual_promote"], false);
}

fn flagged() -> Rollout {
    Rollout {
        steps: vec![
            CanaryStep {
                weight: 10,
                pause_ms: 30_000,
                until_promote: false,
                flag_percent: Some(5),
            },
            CanaryStep {
                weight: 50,
                pause_ms: 0,
                until_promote: true,
                flag_percent: None,
            },
        ],
        canary_flag: "new-checkout".into(),
        ..Rollout::default()
    }
}

#[test]
fn rows_show_the_canary_flag_and_each_step_s_percent() {
    let t = text(Strategy::Canary, Some(&flagged()));
    assert!(
        t.contains(
            "step 1: 10% for 30s, flag 5%\n\
             step 2: 50% until gantry promote\n\
             canary flag: new-checkout: each step serves its canary variant to the step's \
             percent of users, 100% once promoted\n"
        ),
        "{t}"
    );
    let plain = Rollout {
        canary_flag: String::new(),
        ..flagged()
    };
    let t = text(Strategy::Canary, Some(&plain));
    assert!(!t.contains("canary flag"), "{t}");
    assert_eq!(
        step_text(&CanaryStep {
            weight: 50,
            pause_ms: 0,
            until_promote: true,
            flag_percent: Some(0),
        }),
        "50% until gantry promote, flag 0%"
    );
}

#[test]
fn json_carries_the_canary_flag_and_each_step_s_percent() {
    let v = rollout_json(Some(&flagged()));
    assert_eq!(v["canary_flag"], "new-checkout");
    assert_eq!(
        v["steps"],
        json!([
            {"weight": 10, "pause_ms": 30_000, "until_promote": false, "flag_percent": 5},
            {"weight": 50, "pause_ms": 0, "until_promote": true, "flag_percent": null},
        ])
    );
    let v = rollout_json(Some(&Rollout::default()));
    assert_eq!(v["canary_flag"], serde_json::Value::Null);
}
