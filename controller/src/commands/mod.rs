//! One module per command.

pub mod audit;
pub mod deploy;
pub mod dev_pki;
pub mod envelope_file;
pub mod flagset;
pub mod fleet;
pub mod gate;
pub mod history;
pub mod job;
pub mod keygen;
pub mod man;
pub mod quickstart;
pub mod release;
pub mod rollback;
pub mod rollout;
pub mod status;
pub mod status_signals;
pub mod submit;
