//! `gantry keygen --out PREFIX`: an Ed25519 signing key pair as PEM files.

use gantry_proto::keys::{self, KeyError};

use crate::cli::KeygenArgs;

/// Writes PREFIX.key (0600) and PREFIX.pub and prints the key id and paths.
///
/// # Errors
///
/// [`KeyError`] when a file exists already or cannot be written.
pub fn run(args: &KeygenArgs) -> Result<(), KeyError> {
    let (key, key_path, pub_path) = keys::write_keypair(&args.out)?;
    println!("key id: {}", key.key_id());
    println!("private key: {} (keep it secret)", key_path.display());
    println!(
        "public key:  {} (list it in the agent's config)",
        pub_path.display()
    );
    Ok(())
}
