//! Key files, key ids and openssl interoperability.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use gantry_proto::keys::{KeyError, KeyId, PublicKey, SigningKey, write_keypair};
use proptest::prelude::*;

use crate::fixtures::{data_dir, read_text};

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn openssl_made_key_loads_and_matches_its_public_key_file() {
    let key = SigningKey::from_pkcs8_pem(&read_text("job-vector/key.pem")).unwrap();
    let public = read_text("job-vector/key.pub");
    assert_eq!(key.public_key().to_spki_pem(), public);
    assert_eq!(PublicKey::from_spki_pem(&public).unwrap(), key.public_key());
    assert_eq!(
        format!("{}\n", key.key_id()),
        read_text("job-vector/key_id.txt")
    );
}

#[test]
fn key_id_is_sha256_of_the_raw_key() {
    let pk = PublicKey::from_bytes([7u8; 32]);
    let expected = hex::encode(ring::digest::digest(&ring::digest::SHA256, &[7u8; 32]));
    assert_eq!(pk.key_id().as_str(), expected);
}

#[test]
fn pem_round_trips() {
    let key = SigningKey::generate().unwrap();
    let again = SigningKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    let msg = b"message";
    assert_eq!(again.sign(msg), key.sign(msg));
    let pk = PublicKey::from_spki_pem(&key.public_key().to_spki_pem()).unwrap();
    assert_eq!(pk, key.public_key());
    pk.verify(msg, &key.sign(msg)).unwrap();
}

#[test]
fn debug_never_prints_key_material() {
    let key = SigningKey::from_pkcs8_pem(&read_text("job-vector/key.pem")).unwrap();
    let debug = format!("{key:?}");
    assert!(debug.contains(key.key_id().as_str()), "{debug}");
    let der = pem::parse(read_text("job-vector/key.pem"))
        .unwrap()
        .into_contents();
    let seed = &der[der.len() - 32..];
    for needle in [hex::encode(seed), hex::encode(&der), "MC4CAQ".to_owned()] {
        assert!(!debug.contains(&needle), "{debug}");
    }
    assert!(!debug.contains(&format!("{seed:?}")[1..20]), "{debug}");
}

#[test]
fn wrong_algorithm_is_refused() {
    let err = PublicKey::from_spki_pem(&read_text("wrong-algorithm/x25519.pub")).unwrap_err();
    assert!(matches!(err, KeyError::Spki { .. }), "{err:?}");
    let err = SigningKey::from_pkcs8_pem(&read_text("wrong-algorithm/x25519.key")).unwrap_err();
    assert!(matches!(err, KeyError::Pkcs8 { .. }), "{err:?}");
}

#[test]
fn malformed_public_keys_are_refused() {
    let good = PublicKey::from_bytes([1; 32]);
    let mut der = good.to_spki_der();
    der.push(0);
    let trailing = pem::encode(&pem::Pem::new("PUBLIC KEY", der));
    assert!(matches!(
        PublicKey::from_spki_pem(&trailing),
        Err(KeyError::Spki { .. })
    ));
    let short = pem::encode(&pem::Pem::new("PUBLIC KEY", &good.to_spki_der()[..43]));
    assert!(matches!(
        PublicKey::from_spki_pem(&short),
        Err(KeyError::Spki { .. })
    ));
    // A private key where a public key belongs.
    let err = PublicKey::from_spki_pem(&read_text("job-vector/key.pem")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"expected a PEM block labelled "PUBLIC KEY", found "PRIVATE KEY""#
    );
    let two = format!("{}{}", good.to_spki_pem(), good.to_spki_pem());
    assert!(matches!(
        PublicKey::from_spki_pem(&two),
        Err(KeyError::PemCount { found: 2 })
    ));
    assert!(matches!(
        PublicKey::from_spki_pem("not pem at all"),
        Err(KeyError::PemCount { found: 0 } | KeyError::Pem(_))
    ));
}

#[test]
fn verify_refuses_wrong_length_signature() {
    let key = SigningKey::generate().unwrap();
    let sig = key.sign(b"m");
    assert!(matches!(
        key.public_key().verify(b"m", &sig[..63]),
        Err(KeyError::BadSignature)
    ));
    assert!(matches!(
        key.public_key().verify(b"m", &[]),
        Err(KeyError::BadSignature)
    ));
}

#[test]
fn private_key_file_must_not_be_group_or_world_accessible() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.key");
    let pem = read_text("job-vector/key.pem");
    for mode in [0o640, 0o604, 0o660, 0o644, 0o602, 0o620] {
        write_mode(&path, &pem, mode);
        let err = SigningKey::read_pem_file(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::InsecurePermissions { mode: m, .. } if m == mode),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
    }
    for mode in [0o600, 0o400] {
        write_mode(&path, &pem, mode);
        SigningKey::read_pem_file(&path).unwrap();
    }
}

#[test]
fn key_file_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key");
    let err = SigningKey::read_pem_file(&missing).unwrap_err();
    assert!(matches!(err, KeyError::Read { .. }));
    assert!(err.to_string().contains("missing.key"), "{err}");

    let garbage = dir.path().join("garbage.pub");
    write_mode(&garbage, "hello", 0o644);
    let err = PublicKey::read_pem_file(&garbage).unwrap_err();
    assert!(err.to_string().contains("garbage.pub"), "{err}");
    let KeyError::InFile { source, .. } = err else {
        panic!("{err:?}")
    };
    assert!(matches!(
        *source,
        KeyError::PemCount { found: 0 } | KeyError::Pem(_)
    ));
}

#[test]
fn write_keypair_creates_0600_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("deployer.v2");
    let (key, key_path, pub_path) = write_keypair(&prefix).unwrap();
    assert_eq!(key_path, dir.path().join("deployer.v2.key"));
    assert_eq!(pub_path, dir.path().join("deployer.v2.pub"));
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = SigningKey::read_pem_file(&key_path).unwrap();
    assert_eq!(loaded.key_id(), key.key_id());
    assert_eq!(
        PublicKey::read_pem_file(&pub_path).unwrap(),
        key.public_key()
    );

    let before = std::fs::read(&key_path).unwrap();
    let err = write_keypair(&prefix).unwrap_err();
    assert!(
        matches!(&err, KeyError::Exists { path } if *path == key_path),
        "{err:?}"
    );
    assert!(err.to_string().contains("deployer.v2.key"), "{err}");
    assert_eq!(std::fs::read(&key_path).unwrap(), before);

    // Only the public file exists: still refused, and no key file is left behind.
    let lone = dir.path().join("lone");
    std::fs::write(dir.path().join("lone.pub"), "x").unwrap();
    let err = write_keypair(&lone).unwrap_err();
    assert!(matches!(&err, KeyError::Exists { path } if path.ends_with("lone.pub")));
    assert!(!dir.path().join("lone.key").exists());
}

/// Issue: `keygen --out keys/alice` failed when `keys/` did not exist (the README tour's first
/// command). The directory is made, private.
#[test]
fn write_keypair_creates_the_missing_directory_private() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("keys/team/alice");
    let (_, key_path, pub_path) = write_keypair(&prefix).unwrap();
    assert!(key_path.is_file() && pub_path.is_file());
    for d in ["keys", "keys/team"] {
        let mode = std::fs::metadata(dir.path().join(d))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{d}");
    }
    // A file where the directory should be: named in the error, nothing written.
    std::fs::write(dir.path().join("blocker"), "x").unwrap();
    let err = write_keypair(&dir.path().join("blocker/bob")).unwrap_err();
    assert!(
        matches!(&err, KeyError::CreateDir { path, .. } if path.ends_with("blocker")),
        "{err:?}"
    );
}

/// Issue: a public key given where a private key belongs got the advice "chmod 600
/// agent.pub". Each half named in the other's place gets an error saying which it is.
#[test]
fn a_key_file_of_the_wrong_half_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key_path, pub_path) = write_keypair(&dir.path().join("agent")).unwrap();
    let err = SigningKey::read_pem_file(&pub_path).unwrap_err();
    assert!(
        matches!(
            &err,
            KeyError::WrongHalf {
                found: "public",
                wanted: "private",
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("holds a public key (BEGIN PUBLIC KEY)"),
        "{msg}"
    );
    assert!(msg.contains("name the .key file"), "{msg}");
    assert!(!msg.contains("chmod"), "{msg}");
    let err = PublicKey::read_pem_file(&key_path).unwrap_err();
    assert!(
        matches!(
            &err,
            KeyError::WrongHalf {
                found: "private",
                wanted: "public",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("name the .pub file"), "{err}");
}

#[test]
fn key_id_parsing_and_serde() {
    let id = PublicKey::from_bytes([3; 32]).key_id();
    assert_eq!(id.as_str().parse::<KeyId>().unwrap(), id);
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{id}\""));
    assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);

    let upper = id.as_str().to_uppercase();
    for bad in [
        upper.as_str(),
        "",
        "abc",
        &id.as_str()[1..],
        "g".repeat(64).as_str(),
    ] {
        assert!(
            matches!(bad.parse::<KeyId>(), Err(KeyError::InvalidKeyId { .. })),
            "{bad}"
        );
        assert!(serde_json::from_str::<KeyId>(&format!("\"{bad}\"")).is_err());
    }
}

fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: openssl is not on PATH");
    }
    ok
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn interop_with_openssl() {
    if !openssl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs.key");
    let theirs_s = theirs.to_str().unwrap();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", theirs_s]);
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o600)).unwrap();
    let key = SigningKey::read_pem_file(&theirs).unwrap();
    let pubout = openssl(&["pkey", "-in", theirs_s, "-pubout"]);
    assert_eq!(key.public_key().to_spki_pem().as_bytes(), pubout);

    // openssl reads what we write (PKCS#8 v2) and agrees on the public key.
    let (ours, key_path, pub_path) = write_keypair(&dir.path().join("ours")).unwrap();
    let pubout = openssl(&["pkey", "-in", key_path.to_str().unwrap(), "-pubout"]);
    assert_eq!(pubout, std::fs::read(&pub_path).unwrap());
    assert_eq!(ours.public_key().to_spki_pem().as_bytes(), pubout);

    // The key id is SHA-256 over the last 32 bytes of the SPKI DER.
    let der = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        pub_path.to_str().unwrap(),
        "-outform",
        "DER",
    ]);
    let expected = hex::encode(ring::digest::digest(&ring::digest::SHA256, &der[12..]));
    assert_eq!(ours.key_id().as_str(), expected);
}

#[test]
fn openssl_agrees_with_the_job_vector_signature() {
    if !openssl_available() {
        return;
    }
    // Ed25519 is deterministic: openssl's signature over our PAE bytes is the vector's.
    let dir = data_dir().join("job-vector");
    let sig = openssl(&[
        "pkeyutl",
        "-sign",
        "-rawin",
        "-inkey",
        dir.join("key.pem").to_str().unwrap(),
        "-in",
        dir.join("pae.bin").to_str().unwrap(),
    ]);
    assert_eq!(
        format!("{}\n", hex::encode(sig)),
        read_text("job-vector/sig.hex")
    );
}

proptest! {
    #[test]
    fn public_key_parsing_never_panics(text in ".{0,300}") {
        let _ = PublicKey::from_spki_pem(&text);
        let _ = SigningKey::from_pkcs8_pem(&text);
        let _ = text.parse::<KeyId>();
    }

    #[test]
    fn spki_der_parsing_never_panics(der in proptest::collection::vec(any::<u8>(), 0..80)) {
        let wrapped = pem::encode(&pem::Pem::new("PUBLIC KEY", der.clone()));
        let _ = PublicKey::from_spki_pem(&wrapped);
        let _ = SigningKey::from_pkcs8_der(&der);
    }
}
