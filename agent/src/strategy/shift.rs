//! Moving traffic: weights per backend, applying them as a route table, draining, and the
//! router's counters the strategies watch.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{JobCtx, StrategyError};
use crate::app::AppRuntime;
use crate::app::slots::backend_id;
use crate::job::StrategyKind;
use crate::traffic::http_stats::HttpStats;
use crate::traffic::{Backend, RouteTable};

/// The cohort of the app's current release.
pub const STABLE: &str = "stable";
/// The cohort of a canary's instances.
pub const CANARY: &str = "canary";
/// The cohort of a blue-green deploy's new slot before the switch.
pub const PREVIEW: &str = "preview";

/// How often draining backends are checked for open connections.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// How each backend (by port) is weighted in the next table.
pub type Weights = BTreeMap<u16, Route>;

/// One backend's place in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Relative share of new connections.
    pub weight: u32,
    /// No new connections; open ones finish.
    pub draining: bool,
}

/// Spreads `percent` (0–100) of new connections evenly over `ports`.
pub fn share(weights: &mut Weights, ports: &[u16], percent: u32) {
    if ports.is_empty() {
        return;
    }
    let count = u32::try_from(ports.len()).unwrap_or(u32::MAX);
    // Weights in units of 1/10000 of the traffic, so shares of several groups compare.
    let each = (percent * 100 / count).max(u32::from(percent > 0));
    for port in ports {
        weights.insert(
            *port,
            Route {
                weight: each,
                draining: false,
            },
        );
    }
}

/// Marks `ports` draining (no new connections).
pub fn drain(weights: &mut Weights, ports: &[u16]) {
    for port in ports {
        weights.insert(
            *port,
            Route {
                weight: 0,
                draining: true,
            },
        );
    }
}

/// Makes `weights` the route table; instances not listed are left out (the front door drains
/// them). Returns how long the router took to confirm. No-op without a router.
///
/// # Errors
///
/// [`StrategyError::Traffic`] when the router refuses or does not confirm in time.
pub async fn apply(
    app: &AppRuntime,
    ctx: &JobCtx,
    weights: &Weights,
    what: &str,
) -> Result<Duration, StrategyError> {
    apply_table(app, ctx, weights, false, what).await
}

/// [`apply`], with the table's `holding` set as given.
async fn apply_table(
    app: &AppRuntime,
    ctx: &JobCtx,
    weights: &Weights,
    holding: bool,
    what: &str,
) -> Result<Duration, StrategyError> {
    let Some(router) = app.router() else {
        return Ok(Duration::ZERO);
    };
    let generation = router.current()?.map_or(1, |t| t.generation + 1);
    let backends: Vec<Backend> = weights
        .iter()
        .filter_map(|(port, route)| {
            let id = backend_id(app, *port)?;
            let mut b = Backend::new(id, ([127, 0, 0, 1], *port).into(), route.weight);
            b.draining = route.draining;
            b.cohort = Some(cohort_of(app, ctx, *port).to_owned());
            Some(b)
        })
        .collect();
    let mut table = RouteTable::new(generation, backends);
    table.drain_timeout_ms = drain_timeout(ctx)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX);
    table.hold_timeout_ms = crate::app::front_door::hold_timeout_ms(app);
    table.holding = holding;
    // The job's p95 threshold as a histogram edge, so that its verdicts are exact.
    if let Some(r) = &ctx.job.spec.release {
        let ms = u64::try_from(r.rollout.analysis.max_p95_latency.as_millis()).unwrap_or(0);
        if ms > 0 {
            table.latency_edges_ms.push(ms);
        }
    }
    let described = describe(&table);
    ctx.step("traffic.applying", format!("{what}: {described}"))
        .await?;
    let applied = match router.apply(table).await {
        Ok(applied) => {
            app.shared.routes_written(None);
            applied
        }
        Err(e) => {
            app.shared.routes_written(Some(format!(
                "the route table was not applied: {}",
                crate::error::reason(&e)
            )));
            return Err(e.into());
        }
    };
    ctx.step(
        "traffic.switched",
        format!(
            "{what}: generation {} in effect after {} ms",
            applied.generation,
            applied.took.as_millis()
        ),
    )
    .await?;
    Ok(applied.took)
}

/// A backend's cohort: the active slot's instances are the stable release; the other slot's
/// are the canary (canary deploys) or the preview (blue-green), else stable too.
fn cohort_of(app: &AppRuntime, ctx: &JobCtx, port: u16) -> &'static str {
    let in_active = app
        .instances
        .iter()
        .find(|i| i.record().port == port)
        .is_none_or(|i| i.record().slot == app.state.active_slot);
    if in_active {
        return STABLE;
    }
    match ctx.job.spec.release.as_ref().map(|r| r.strategy) {
        Some(StrategyKind::Canary) => CANARY,
        Some(StrategyKind::BlueGreen) => PREVIEW,
        Some(StrategyKind::Hot | StrategyKind::Rolling) | None => STABLE,
    }
}

/// A cohort's HTTP counters from the front door, with the pid of the front door that counted
/// them; `None` without a router, when its stats cannot be read, or when it does not run in
/// HTTP mode.
pub fn http_of(app: &AppRuntime, cohort: &str) -> Option<(u32, HttpStats)> {
    let stats = app.router()?.stats().ok()?;
    if !stats.is_http() {
        return None;
    }
    let counters = stats.cohorts.get(cohort).cloned().unwrap_or_default();
    Some((stats.pid, counters))
}

/// One backend's HTTP counters from the front door (zero before it counted any), with the
/// front door's pid; `None` as for [`http_of`].
pub fn http_of_backend(app: &AppRuntime, id: &str) -> Option<(u32, HttpStats)> {
    let stats = app.router()?.stats().ok()?;
    if !stats.is_http() {
        return None;
    }
    let counters = stats
        .backends
        .get(id)
        .and_then(|b| b.http.clone())
        .unwrap_or_default();
    Some((stats.pid, counters))
}

fn describe(table: &RouteTable) -> String {
    if table.backends.is_empty() {
        return "no backends".to_owned();
    }
    let parts: Vec<String> = table
        .backends
        .iter()
        .map(|b| {
            if b.draining {
                format!("{} draining", b.id)
            } else {
                format!("{} weight {}", b.id, b.weight)
            }
        })
        .collect();
    parts.join(", ")
}

/// How long draining connections get: the job's release's `drain_timeout` (rollout
/// parameter), else the one the job was given for the release it drains (the convergence
/// after a restart), else 30 s.
pub fn drain_timeout(ctx: &JobCtx) -> Duration {
    ctx.job
        .spec
        .release
        .as_ref()
        .map(|r| r.rollout.drain_timeout)
        .or(ctx.drain_timeout)
        .unwrap_or(Duration::from_secs(30))
}

/// Routes all new connections evenly to the instances in `ports`, draining the rest.
///
/// # Errors
///
/// See [`apply`].
pub async fn serve_only(
    app: &AppRuntime,
    ctx: &JobCtx,
    ports: &[u16],
    what: &str,
) -> Result<Duration, StrategyError> {
    let mut weights = Weights::new();
    if ports.is_empty() {
        // Nothing to serve: an empty table. Backends left out drain (they are not cut).
        return apply(app, ctx, &weights, what).await;
    }
    let others: Vec<u16> = app
        .instances
        .iter()
        .map(|i| i.record().port)
        .filter(|p| !ports.contains(p))
        .collect();
    drain(&mut weights, &others);
    share(&mut weights, ports, 100);
    apply(app, ctx, &weights, what).await
}

/// Before the instances of `app` are stopped and replaced in place (hot deploys, restarts,
/// the return to the previous release): with a router that can hold connections and a hold
/// timeout, routes nothing and holds new connections (the instances left out drain), then
/// gives their open connections up to [`SETTLE_MAX`] to finish. So no new connection reaches
/// an instance that is about to stop: a connection its listener queued but never accepted
/// would be reset. Other routers keep the table in force. Returns whether it holds.
///
/// # Errors
///
/// See [`apply`].
pub async fn hold_new(app: &AppRuntime, ctx: &JobCtx) -> Result<bool, StrategyError> {
    let Some(router) = app.router() else {
        return Ok(false);
    };
    if !router.can_hold() || app.instances.is_empty() {
        return Ok(false);
    }
    let hold = crate::app::front_door::hold_timeout_ms(app);
    if hold == 0 {
        return Ok(false);
    }
    let ports: Vec<u16> = app.instances.iter().map(|i| i.record().port).collect();
    apply_table(
        app,
        ctx,
        &Weights::new(),
        true,
        "hold new connections while the instances are replaced",
    )
    .await?;
    let settle = drain_timeout(ctx)
        .min(Duration::from_millis(hold / 2))
        .min(SETTLE_MAX);
    wait_drained_within(app, ctx, &ports, settle, false).await;
    Ok(true)
}

/// How long [`hold_new`] waits, at most, for the open connections of instances about to be
/// replaced (new connections wait meanwhile); an app that stops gracefully finishes what is
/// still open after that, and closes idle keep-alive connections.
pub const SETTLE_MAX: Duration = Duration::from_secs(1);

/// Waits until the backends on `ports` have no open connections, at most the drain timeout.
/// Routers without counters (nginx drains by itself on reload) return at once.
pub async fn wait_drained(app: &AppRuntime, ctx: &JobCtx, ports: &[u16]) {
    wait_drained_within(app, ctx, ports, drain_timeout(ctx), true).await;
}

/// [`wait_drained`] for at most `limit`, noting a timeout in the audit log when `note_timeout`.
async fn wait_drained_within(
    app: &AppRuntime,
    ctx: &JobCtx,
    ports: &[u16],
    limit: Duration,
    note_timeout: bool,
) {
    let Some(router) = app.router() else { return };
    let ids: Vec<String> = ports.iter().filter_map(|p| backend_id(app, *p)).collect();
    let deadline = Instant::now() + limit;
    loop {
        let open: u64 = match router.stats() {
            Ok(stats) => ids
                .iter()
                .filter_map(|id| stats.backends.get(id))
                .map(|b| b.active)
                .sum(),
            Err(_) => return,
        };
        if open == 0 {
            return;
        }
        if Instant::now() >= deadline {
            if !note_timeout {
                return;
            }
            ctx.note(
                "backend.drain_timeout",
                format!("{open} connection(s) still open after the drain timeout; stopping anyway"),
            )
            .await;
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Front-door connection errors to the backends on `ports` since the front door started.
pub fn connect_errors(app: &AppRuntime, ports: &[u16]) -> u64 {
    let Some(router) = app.router() else { return 0 };
    let ids: Vec<String> = ports.iter().filter_map(|p| backend_id(app, *p)).collect();
    router
        .stats()
        .map(|s| s.connect_errors_of(|id| ids.iter().any(|i| i == id)))
        .unwrap_or(0)
}
