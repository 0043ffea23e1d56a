//! One module per command.

pub mod audit;
pub mod deploy;
pub mod dev_pki;
pub mod job;
pub mod keygen;
pub mod quickstart;
pub mod rollback;
pub mod status;
pub mod submit;
