//! The signed-job envelope against the fixed vector and its tampered variants.

use gantry_proto::envelope::{JOB_PAYLOAD_TYPE, job_digest, pae, sign_job, verify_job};
use gantry_proto::keys::{KeyError, PublicKey, SigningKey};
use proptest::prelude::*;

use crate::fixtures::{read, read_text, signing_key};

fn sig_hex(rel: &str) -> Vec<u8> {
    hex::decode(read_text(rel).trim()).unwrap()
}

fn vector_key() -> PublicKey {
    PublicKey::from_spki_pem(&read_text("job-vector/key.pub")).unwrap()
}

#[test]
fn vector_pae_is_byte_exact() {
    let job = read("job-vector/job.bin");
    let expected_head = format!("DSSEv1 38 {JOB_PAYLOAD_TYPE} {} ", job.len());
    let mut expected = expected_head.into_bytes();
    expected.extend_from_slice(&job);
    assert_eq!(pae(JOB_PAYLOAD_TYPE, &job), expected);
    assert_eq!(read("job-vector/pae.bin"), expected);
}

#[test]
fn vector_signature_is_reproduced_and_verifies() {
    let job = read("job-vector/job.bin");
    let key = signing_key("job-vector/key.pem");
    let sig = sign_job(&key, &job);
    assert_eq!(sig.sig, sig_hex("job-vector/sig.hex"));
    assert_eq!(
        format!("{}\n", sig.key_id),
        read_text("job-vector/key_id.txt")
    );
    verify_job(&vector_key(), &job, &sig.sig).unwrap();
    assert_eq!(
        format!("{}\n", job_digest(&job)),
        read_text("job-vector/job_digest.txt")
    );
}

#[test]
fn flipped_sig_bit_is_refused() {
    let job = read("job-vector/job.bin");
    let err = verify_job(&vector_key(), &job, &sig_hex("flipped-sig-bit/sig.hex")).unwrap_err();
    assert!(matches!(err, KeyError::BadSignature));
    assert_eq!(err.to_string(), "Ed25519 signature does not verify");
}

#[test]
fn flipped_payload_bit_is_refused() {
    let job = read("flipped-payload-bit/job.bin");
    assert_ne!(job, read("job-vector/job.bin"));
    let err = verify_job(&vector_key(), &job, &sig_hex("job-vector/sig.hex")).unwrap_err();
    assert!(matches!(err, KeyError::BadSignature));
}

#[test]
fn payload_signed_under_another_type_is_refused() {
    let job = read("job-vector/job.bin");
    let err = verify_job(&vector_key(), &job, &sig_hex("wrong-payload-type/sig.hex")).unwrap_err();
    assert!(matches!(err, KeyError::BadSignature));
}

#[test]
fn signature_by_another_key_is_refused() {
    let job = read("job-vector/job.bin");
    let other = PublicKey::from_spki_pem(&read_text("wrong-key/key.pub")).unwrap();
    // The right signature under the wrong key, and the other key's signature under ours.
    let err = verify_job(&other, &job, &sig_hex("job-vector/sig.hex")).unwrap_err();
    assert!(matches!(err, KeyError::BadSignature));
    let err = verify_job(&vector_key(), &job, &sig_hex("wrong-key/sig.hex")).unwrap_err();
    assert!(matches!(err, KeyError::BadSignature));
    verify_job(&other, &job, &sig_hex("wrong-key/sig.hex")).unwrap();
}

proptest! {
    #[test]
    fn pae_is_injective(
        t1 in "[ 0-9a-z/+.]{0,12}", p1 in proptest::collection::vec(any::<u8>(), 0..24),
        t2 in "[ 0-9a-z/+.]{0,12}", p2 in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        prop_assume!((&t1, &p1) != (&t2, &p2));
        prop_assert_ne!(pae(&t1, &p1), pae(&t2, &p2));
    }

    #[test]
    fn pae_moves_bytes_between_type_and_payload_never_collide(
        s in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'1'), Just(b'a')], 0..16),
        cut1 in 0usize..16, cut2 in 0usize..16,
    ) {
        // Same concatenated bytes, split differently between type and payload.
        let (c1, c2) = (cut1.min(s.len()), cut2.min(s.len()));
        prop_assume!(c1 != c2);
        let t1 = String::from_utf8(s[..c1].to_vec()).unwrap();
        let t2 = String::from_utf8(s[..c2].to_vec()).unwrap();
        prop_assert_ne!(pae(&t1, &s[c1..]), pae(&t2, &s[c2..]));
    }

    #[test]
    fn sign_verify_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..512), bit in any::<usize>()) {
        let key = signing_key("job-vector/key.pem");
        let sig = sign_job(&key, &payload);
        prop_assert!(verify_job(&key.public_key(), &payload, &sig.sig).is_ok());
        let mut bad = sig.sig.clone();
        bad[bit % 512 / 8] ^= 1 << (bit % 8);
        prop_assert!(verify_job(&key.public_key(), &payload, &bad).is_err());
        if !payload.is_empty() {
            let mut tampered = payload.clone();
            let i = bit % (payload.len() * 8);
            tampered[i / 8] ^= 1 << (i % 8);
            prop_assert!(verify_job(&key.public_key(), &tampered, &sig.sig).is_err());
        }
    }
}

#[test]
fn fresh_key_round_trip() {
    let key = SigningKey::generate().unwrap();
    let sig = sign_job(&key, b"");
    verify_job(&key.public_key(), b"", &sig.sig).unwrap();
}

/// The worked example of docs/protocol.md.
#[test]
fn protocol_doc_worked_example() {
    use prost::Message as _;
    let job = gantry_proto::v1::Job {
        job_id: "j-1".into(),
        app: "web".into(),
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(hex::encode(&job), "0a036a2d311a03776562");
    let expected = b"DSSEv1 38 application/vnd.gantry.job.v1+protobuf 10 \x0a\x03j-1\x1a\x03web";
    assert_eq!(pae(JOB_PAYLOAD_TYPE, &job), expected.to_vec());
    let key = signing_key("job-vector/key.pem");
    assert_eq!(
        key.key_id().as_str(),
        "0d350283dd3de53dd670e6997ce07c1a9121e3c583126119e6cde60e4ab52b50"
    );
    assert_eq!(
        hex::encode(sign_job(&key, &job).sig),
        "fbcf5c9a883305edc35176bcc0788c95f5d5c4c14f64b318c06706ea510873ff\
         b67818f4a9c121135450bc5f55fe3e03f0238a5a9a37bbeb26651c2f86cf090b"
    );
    assert_eq!(
        job_digest(&job),
        "57b0d254de2944e71ce0eab00be3c96539361337e692c624187e7c33e2944e76"
    );
}

/// Security review A12: a field appended to the signed bytes (here an unknown one, field 127)
/// breaks the signature, although a protobuf decoder ignores it and re-encodes the original
/// bytes: only a verifier over the exact bytes catches it.
#[test]
fn a12_an_unknown_field_appended_after_signing_is_refused() {
    use prost::Message as _;
    let job = read("job-vector/job.bin");
    let sig = sig_hex("job-vector/sig.hex");
    let mut appended = job.clone();
    appended.extend_from_slice(&[0xf8, 0x07, 0x01]); // field 127, varint 1
    let decoded = gantry_proto::v1::Job::decode(appended.as_slice()).unwrap();
    assert_eq!(
        decoded.encode_to_vec(),
        job,
        "a re-encoding verifier would see the signed bytes again"
    );
    let err = verify_job(&vector_key(), &appended, &sig).unwrap_err();
    assert!(matches!(err, KeyError::BadSignature));
    verify_job(&vector_key(), &job, &sig).unwrap();
}
