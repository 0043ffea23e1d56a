//! The Gantry controller service (`gantry server`): it keeps the fleet inventory and every
//! rollout in a durable store, holds one lease per rollout (an epoch that only grows, the fence
//! the agents check), and drives plans ring by ring (DESIGN "Fleet", docs/fleet.md).
//!
//! # Layout
//!
//! Data flows down the list; each module imports only those below it.
//!
//! * [`dial_in`] and [`sessions`]: agents in dial-out mode connect to the service's `[dial]
//!   listen`; each connection becomes that agent's session (an HTTP/2 client over it), which
//!   [`dial`] uses like a dialled connection and the server's proxy forwards operators' calls to.
//! * [`flag_sets`]: the signed flag sets handed in, kept per app and pushed to the agents
//!   they target (through [`dial`]), each agent's answer kept in [`store`].
//! * [`deployments`]: where an artifact ran across the fleet, from the signed plans and the
//!   agents' verified logs (for `release show --server`).
//! * [`promotion`]: `[promotion]`'s rules, checked when a plan is handed in: the environments
//!   before the plan's must have run its artifact, as their agents' verified audit logs show
//!   (it reads [`store`] and the agents' logs through [`dial`]).
//! * [`store`]: the durable store behind one trait: an embedded file ([`store::embedded`]) or
//!   PostgreSQL ([`store::postgres`]); records, fenced writes, the lease compare-and-set.

#![forbid(unsafe_code)]

pub mod agents;
pub mod artifacts;
pub mod audit;
pub mod config;
pub mod deployments;
pub mod dial;
pub mod dial_in;
pub mod dispatch;
pub mod engine;
pub mod flag_sets;
pub mod lease;
pub mod plan;
pub mod policy;
pub mod promotion;
pub mod server;
pub mod sessions;
pub mod store;
