//! Quickstart's feature-flag step: the sample app shows its flag `banner` on its page (from
//! the agent's OFREP endpoint, `GANTRY_OFREP_URL`). Quickstart pushes a signed flag set with
//! the banner at its classic variant, releases the new variant to everyone (a 100 %
//! `fractional` rollout, version 2), then uses the kill switch, signed by a key that may only
//! switch flags off, and the page shows the default again. Each time it GETs the page.

use std::net::SocketAddr;

use gantry_policy::config::raw::{RawConfig, RawFlags};
use gantry_proto::keys::SigningKey;
use serde_json::json;

use super::workspace::{AGENT_ID, APP};
use super::{Ctx, QuickstartError};
use crate::commands::flagset::{kill_flags, push_definition, receipt_text};

/// The key that may change the sample app's flags (role `flags`), under `keys/`.
pub const RELEASE_KEY: &str = "release-manager";
/// The key that may only switch them off (role `kill-switch`), under `keys/`.
pub const KILL_KEY: &str = "on-call";
/// The flag the sample app shows.
const FLAG: &str = "banner";

/// `raw` with the two flag keys and `[apps.sample.flags]` serving OFREP on `ofrep_port`.
pub fn with_flags(raw: RawConfig, ofrep_port: u16) -> RawConfig {
    let mut raw = raw
        .key(RELEASE_KEY, &format!("keys/{RELEASE_KEY}.pub"), &["flags"])
        .key(KILL_KEY, &format!("keys/{KILL_KEY}.pub"), &["kill-switch"]);
    if let Some(app) = raw.apps.get_mut(APP) {
        app.flags = Some(RawFlags::new(&format!("127.0.0.1:{ofrep_port}")));
    }
    raw
}

/// The flag set: `banner` at `classic`, or with `released` the `new` variant for everyone.
fn definition(released: bool) -> Vec<u8> {
    let mut banner = json!({
        "state": "ENABLED",
        "defaultVariant": "classic",
        "variants": {"classic": "Welcome", "new": "Welcome to the new sample"},
    });
    if released {
        banner["targeting"] = json!({"fractional": [["new", 100], ["classic", 0]]});
    }
    json!({"flags": {FLAG: banner}}).to_string().into_bytes()
}

/// The keys of the step.
pub struct FlagKeys {
    /// Role `flags`.
    pub release: SigningKey,
    /// Role `kill-switch`.
    pub kill: SigningKey,
}

/// Push, release, kill; the page after each.
pub async fn tour(ctx: &Ctx, front_door: SocketAddr) -> Result<(), QuickstartError> {
    let agent = ctx.connect().await?;
    let keys = &ctx.flag_keys;
    println!(
        "\n== flags: push a signed flag set for {APP}, {FLAG} at its classic variant (key \
         {RELEASE_KEY}, role flags)"
    );
    let release = |json: Vec<u8>, version: u64, reason: &'static str| {
        push_definition(
            &agent,
            AGENT_ID,
            APP,
            json,
            version,
            std::slice::from_ref(&keys.release),
            reason,
        )
    };
    let r = release(definition(false), 1, "quickstart: add the banner flag").await?;
    println!("{}", receipt_text(AGENT_ID, &r));
    ctx.get_front_door(front_door)?;

    println!("\n== flags: release the new {FLAG} to everyone (100 % rollout, version 2)");
    let r = release(definition(true), 2, "quickstart: release the new banner").await?;
    println!("{}", receipt_text(AGENT_ID, &r));
    ctx.get_front_door(front_door)?;

    println!(
        "\n== flags: kill switch, `gantry flags kill {FLAG}` (key {KILL_KEY}, role kill-switch: \
         may only switch flags off)"
    );
    let r = kill_flags(
        &agent,
        AGENT_ID,
        APP,
        &[FLAG.to_owned()],
        false,
        std::slice::from_ref(&keys.kill),
        "quickstart: kill switch",
    )
    .await?;
    println!("{}", receipt_text(AGENT_ID, &r));
    ctx.get_front_door(front_door)
}

#[cfg(test)]
mod tests {
    use gantry_policy::config::raw::RawApp;

    use super::*;

    #[test]
    fn the_tour_shows_classic_then_new_then_the_default_when_killed() {
        let ctx = json!({"targetingKey": "sample-user"});
        let eval = |def: &[u8]| {
            let set = gantry_flags::FlagSet::parse(def).unwrap();
            let r = set.evaluate(FLAG, &ctx, 0);
            (r.variant.clone(), r.reason)
        };
        let v = |s: &str| Some(s.to_owned());
        use gantry_flags::Reason;
        assert_eq!(eval(&definition(false)), (v("classic"), Reason::Static));
        assert_eq!(eval(&definition(true)), (v("new"), Reason::TargetingMatch));
        let killed = crate::commands::flagset::switched_off(
            APP,
            &definition(true),
            &[FLAG.to_owned()],
            false,
        )
        .unwrap();
        assert_eq!(eval(&killed).1, Reason::Disabled);
        let old = gantry_flags::FlagSet::parse(&definition(true)).unwrap();
        let new = gantry_flags::FlagSet::parse(&killed).unwrap();
        assert_eq!(gantry_flags::check_kill_switch(&old, &new), Ok(()));
    }

    #[test]
    fn the_config_grants_the_flags_and_kill_switch_roles() {
        let raw = with_flags(
            RawConfig::new(AGENT_ID).app(APP, RawApp::new("nobody", "1-2")),
            4242,
        );
        let text = raw.to_toml().unwrap();
        assert!(text.contains(r#"roles = ["flags"]"#), "{text}");
        assert!(text.contains(r#"roles = ["kill-switch"]"#), "{text}");
        assert!(
            text.contains("[apps.sample.flags]\nlisten = \"127.0.0.1:4242\""),
            "{text}"
        );
    }
}
