//! Adding signatures to a signed job: over the exact job bytes (never a re-encoding), at most
//! once per key.

use gantry_proto::envelope;
use gantry_proto::keys::{KeyId, SigningKey};
use gantry_proto::v1::SignedJob;

use crate::fault::Fault;

/// Why a signature was not added.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key has signed these job bytes already.
    #[error("the job is already signed by key {key_id}")]
    AlreadySigned {
        /// The key.
        key_id: KeyId,
    },
}

impl SignError {
    /// Whose side the failure is on.
    pub fn fault(&self) -> Fault {
        match self {
            SignError::AlreadySigned { .. } => Fault::Input,
        }
    }
}

/// Adds `key`'s signature over `signed.job` and returns its key id.
///
/// # Errors
///
/// [`SignError::AlreadySigned`] when `key` signed it already, by key id or by a signature that
/// verifies under its public key (a key listed under another id still counts once).
pub fn add_signature(signed: &mut SignedJob, key: &SigningKey) -> Result<KeyId, SignError> {
    let key_id = key.key_id();
    let public = key.public_key();
    let dup = signed.signatures.iter().any(|s| {
        s.key_id == key_id.as_str() || envelope::verify_job(&public, &signed.job, &s.sig).is_ok()
    });
    if dup {
        return Err(SignError::AlreadySigned { key_id });
    }
    signed.signatures.push(envelope::sign_job(key, &signed.job));
    Ok(key_id)
}

#[cfg(test)]
mod tests {
    use gantry_proto::keys::PublicKey;

    use super::*;

    #[test]
    fn each_key_signs_once_and_every_signature_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, _, _) = gantry_proto::keys::write_keypair(&dir.path().join("alice")).unwrap();
        let (bob, _, _) = gantry_proto::keys::write_keypair(&dir.path().join("bob")).unwrap();
        let mut signed = SignedJob {
            job: b"job bytes".to_vec(),
            signatures: Vec::new(),
            comments: Vec::new(),
        };
        assert_eq!(add_signature(&mut signed, &alice).unwrap(), alice.key_id());
        assert_eq!(add_signature(&mut signed, &bob).unwrap(), bob.key_id());
        let err = add_signature(&mut signed, &alice).unwrap_err();
        assert!(
            matches!(&err, SignError::AlreadySigned { key_id } if *key_id == alice.key_id()),
            "{err:?}"
        );
        assert_eq!(err.fault(), Fault::Input);
        assert_eq!(signed.signatures.len(), 2);
        let keys: [PublicKey; 2] = [alice.public_key(), bob.public_key()];
        for (s, k) in signed.signatures.iter().zip(&keys) {
            assert_eq!(s.key_id, k.key_id().as_str());
            envelope::verify_job(k, &signed.job, &s.sig).unwrap();
        }
    }

    #[test]
    fn a_signature_filed_under_another_id_still_counts_for_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, _, _) = gantry_proto::keys::write_keypair(&dir.path().join("alice")).unwrap();
        let mut signed = SignedJob {
            job: b"job bytes".to_vec(),
            signatures: Vec::new(),
            comments: Vec::new(),
        };
        add_signature(&mut signed, &alice).unwrap();
        signed.signatures[0].key_id = "someone-else".into();
        assert!(add_signature(&mut signed, &alice).is_err());
    }
}
