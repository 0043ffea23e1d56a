//! Talking to one Gantry agent: the library both the `gantry` CLI and a long-running controller
//! service use to reach an agent over mutual TLS, sign a job, upload its artifact, submit it,
//! follow its events to the end and witness the agent's signed audit checkpoints.
//!
//! # Design
//!
//! Inputs are typed values (paths, [`connect::ConnSettings`], protobuf messages), never command
//! line flags; errors are typed per module, each with a [`Fault`] that says whose side the
//! failure is on, so that the caller chooses what it means (the CLI maps it to an exit code, a
//! service to a retry or a halt). Nothing here prints: progress is reported through the
//! [`upload::UploadProgress`] and [`follow::FollowObserver`] traits.
//!
//! # Layout
//!
//! Data flows down the list; each module imports only those below it.
//!
//! * [`follow`]: submit a signed job and follow its event stream to the end, re-attaching with
//!   `Watch` when it drops; witnesses the checkpoint the result carries.
//! * [`upload`]: make sure the agent holds a job's artifact; the file's digest; chunked upload.
//! * [`connect`]: the mTLS channel (the agent's certificate must name its id); gRPC statuses
//!   to typed errors (refused vs. failed on the agent's side vs. a broken connection).
//! * [`flags`]: sign a feature-flag set, push it, read the set in force.
//! * [`sign`]: add a key's signature to a signed job, once per key.
//! * [`witness`]: the newest signed audit checkpoint seen from each agent and key, kept on disk;
//!   a new one replaces it only if it verifies and the lines between them chain.
//! * [`signals`]: an agent's golden signals as JSON.
//! * [`clock`]: Unix time in seconds and milliseconds.
//! * [`fault`]: whose side a failure is on.

#![forbid(unsafe_code)]

pub mod clock;
pub mod connect;
pub mod fault;
pub mod flags;
pub mod follow;
pub mod sign;
pub mod signals;
pub mod upload;
pub mod witness;

pub use connect::{Agent, ClientError, ConnSettings};
pub use fault::Fault;
