//! The signed-job envelope: DSSE pre-authentication encoding, signing and verifying a job's
//! exact bytes.
//!
//! A `SignedJob` carries the protobuf encoding of a `Job` as opaque bytes. Every signature is
//! Ed25519 over [`pae`]`(`[`JOB_PAYLOAD_TYPE`]`, job_bytes)`, computed over **those exact
//! bytes**: protobuf encoding is not canonical, so a decoded job is never re-encoded to check a
//! signature.
//!
//! ```text
//! PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
//! ```
//! where `SP` is one space (0x20) and `LEN` is the byte count in ASCII decimal, no leading
//! zeros.

use crate::keys::{KeyError, PublicKey, SigningKey, sha256_hex};

/// The DSSE payload type of a job.
pub const JOB_PAYLOAD_TYPE: &str = "application/vnd.gantry.job.v1+protobuf";

/// The DSSE payload type of a flag set (`SignedFlags.flags`, DESIGN "Feature flags").
pub const FLAGS_PAYLOAD_TYPE: &str = "application/vnd.gantry.flags.v1+protobuf";

/// DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP len(type) SP type SP len(payload) SP payload`, lengths in ASCII decimal bytes.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let head = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    );
    let mut out = Vec::with_capacity(head.len() + payload.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Signs any payload under a DSSE payload type: Ed25519 over `pae(payload_type, payload)`.
pub fn sign_payload(key: &SigningKey, payload_type: &str, payload: &[u8]) -> [u8; 64] {
    key.sign(&pae(payload_type, payload))
}

/// Verifies a signature made by [`sign_payload`].
///
/// # Errors
/// [`KeyError::BadSignature`] when it does not verify.
pub fn verify_payload(
    key: &PublicKey,
    payload_type: &str,
    payload: &[u8],
    sig: &[u8],
) -> Result<(), KeyError> {
    key.verify(&pae(payload_type, payload), sig)
}

/// Signs a job's exact protobuf bytes. The signature's `key_id` is `key.key_id()`.
pub fn sign_job(key: &SigningKey, job_bytes: &[u8]) -> crate::v1::Signature {
    crate::v1::Signature {
        key_id: key.key_id().to_string(),
        sig: sign_payload(key, JOB_PAYLOAD_TYPE, job_bytes).to_vec(),
    }
}

/// Verifies one signature over a job's exact protobuf bytes.
///
/// # Errors
/// [`KeyError::BadSignature`] when it does not verify under `key`.
pub fn verify_job(key: &PublicKey, job_bytes: &[u8], sig: &[u8]) -> Result<(), KeyError> {
    verify_payload(key, JOB_PAYLOAD_TYPE, job_bytes, sig)
}

/// Signs a flag set's exact protobuf bytes (`SignedFlags.flags`).
pub fn sign_flags(key: &SigningKey, flags_bytes: &[u8]) -> crate::v1::Signature {
    crate::v1::Signature {
        key_id: key.key_id().to_string(),
        sig: sign_payload(key, FLAGS_PAYLOAD_TYPE, flags_bytes).to_vec(),
    }
}

/// Verifies one signature over a flag set's exact protobuf bytes.
///
/// # Errors
/// [`KeyError::BadSignature`] when it does not verify under `key`.
pub fn verify_flags(key: &PublicKey, flags_bytes: &[u8], sig: &[u8]) -> Result<(), KeyError> {
    verify_payload(key, FLAGS_PAYLOAD_TYPE, flags_bytes, sig)
}

/// Lowercase hex SHA-256 of the exact job bytes.
pub fn job_digest(job_bytes: &[u8]) -> String {
    sha256_hex(job_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // The example from the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn sign_then_verify() {
        let key = SigningKey::generate().unwrap();
        let sig = sign_job(&key, b"job");
        assert_eq!(sig.key_id, key.key_id().as_str());
        verify_job(&key.public_key(), b"job", &sig.sig).unwrap();
        assert!(matches!(
            verify_job(&key.public_key(), b"jobs", &sig.sig),
            Err(KeyError::BadSignature)
        ));
    }

    #[test]
    fn digest_is_lowercase_hex_sha256() {
        assert_eq!(
            job_digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
