//! Ed25519 keys as standard PEM files, and their key ids.
//!
//! # Formats
//!
//! * Private keys are PKCS#8 (`-----BEGIN PRIVATE KEY-----`), v1 as written by
//!   `openssl genpkey -algorithm ed25519` (and by [`write_keypair`]), or v2 (with the public
//!   key). Files must not be accessible by group or others (mode `& 0o077 == 0`).
//! * Public keys are SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), as written by
//!   `openssl pkey -pubout`. For Ed25519 the DER is always the 12 bytes
//!   `30 2a 30 05 06 03 2b 65 70 03 21 00` followed by the 32 raw key bytes; anything else is
//!   refused.
//! * A [`KeyId`] is the lowercase hex SHA-256 of the 32 raw public-key bytes.
//!
//! Key material is never printed: [`SigningKey`]'s `Debug` shows only its key id.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::signature::{self, Ed25519KeyPair, KeyPair};

/// The DER prefix of every Ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID 1.3.101.112 },
/// BIT STRING (0 unused bits) }, followed by the 32 raw key bytes.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// PEM label of a PKCS#8 private key.
pub const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";
/// PEM label of a SubjectPublicKeyInfo public key.
pub const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// Largest key file we read; real ones are a few hundred bytes.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// What went wrong with a key, a key file or a signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be opened or read.
    #[error("cannot read key file {}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A private key file is readable or writable by group or others.
    #[error(
        "private key file {} is accessible by group or others (mode {mode:04o}); \
         it must be 0600 or stricter (chmod 600 {})",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file named as a private key holds a public key, or the other way round.
    #[error(
        "key file {} holds a {found} key (BEGIN {label}), but a {wanted} key is needed here{hint}",
        path.display(),
        label = if *found == "public" { PUBLIC_KEY_LABEL } else { PRIVATE_KEY_LABEL },
        hint = if *wanted == "private" {
            ": name the .key file that `keygen` wrote beside it"
        } else {
            ": name the .pub file that `keygen` wrote beside it, and keep the private key private"
        }
    )]
    WrongHalf {
        /// The key file.
        path: PathBuf,
        /// `"public"` or `"private"`: what the file holds.
        found: &'static str,
        /// What was asked for.
        wanted: &'static str,
    },
    /// The directory of a new key pair could not be created.
    #[error("cannot create key directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The key file was read but does not hold a valid key.
    #[error("invalid key file {}", path.display())]
    InFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its contents.
        #[source]
        source: Box<KeyError>,
    },
    /// The input is not PEM.
    #[error("not a PEM document")]
    Pem(#[source] pem::PemError),
    /// The input holds no PEM block, or more than one.
    #[error("expected exactly one PEM block, found {found}")]
    PemCount {
        /// How many blocks were found.
        found: usize,
    },
    /// The PEM block has another label.
    #[error("expected a PEM block labelled {expected:?}, found {found:?}")]
    PemLabel {
        /// The label we need.
        expected: &'static str,
        /// The label we found.
        found: String,
    },
    /// The public key is not an Ed25519 SubjectPublicKeyInfo.
    #[error("not an Ed25519 public key (SubjectPublicKeyInfo): {reason}")]
    Spki {
        /// What is wrong.
        reason: &'static str,
    },
    /// The private key is not an Ed25519 PKCS#8 document.
    #[error("not an Ed25519 PKCS#8 private key: {reason}")]
    Pkcs8 {
        /// What is wrong, as ring reports it.
        reason: String,
    },
    /// The system random source failed while generating a key.
    #[error("cannot generate an Ed25519 key: the system random source failed")]
    Generate,
    /// [`write_keypair`] found an existing file.
    #[error("refusing to overwrite existing key file {}", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A key file could not be written.
    #[error("cannot write key file {}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The signature does not verify under this public key.
    #[error("Ed25519 signature does not verify")]
    BadSignature,
    /// A key id string is not 64 lowercase hex digits.
    #[error("invalid key id {input:?}: {reason}")]
    InvalidKeyId {
        /// The rejected input (truncated to 80 characters).
        input: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn in_file(path: &Path) -> impl FnOnce(KeyError) -> KeyError + '_ {
    move |e| KeyError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Lowercase hex SHA-256 of the raw 32-byte Ed25519 public key.
///
/// Parsing ([`FromStr`], serde) accepts exactly 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let reason = if s.len() != 64 {
            Some("expected 64 hex digits (SHA-256 of the raw public key)")
        } else if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Some("expected lowercase hex digits only")
        } else {
            None
        };
        match reason {
            None => Ok(KeyId(s.to_owned())),
            Some(reason) => Err(KeyError::InvalidKeyId {
                input: s.chars().take(80).collect(),
                reason,
            }),
        }
    }
}

impl serde::Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// SHA-256 as lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// An Ed25519 public key (32 raw bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl PublicKey {
    /// The key with these raw bytes. Any 32 bytes are accepted here; a point that is not on the
    /// curve simply never verifies a signature.
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        PublicKey(raw)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the DER of an Ed25519 SubjectPublicKeyInfo (exactly 44 bytes).
    ///
    /// # Errors
    /// [`KeyError::Spki`] for anything but the fixed Ed25519 prefix and 32 key bytes.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) else {
            return Err(KeyError::Spki {
                reason: "the DER does not start with the Ed25519 algorithm identifier",
            });
        };
        let raw: [u8; 32] = raw.try_into().map_err(|_| KeyError::Spki {
            reason: "the key is not exactly 32 bytes",
        })?;
        Ok(PublicKey(raw))
    }

    /// The DER of this key's SubjectPublicKeyInfo (44 bytes).
    pub fn to_spki_der(&self) -> Vec<u8> {
        let mut der = Vec::with_capacity(44);
        der.extend_from_slice(&ED25519_SPKI_PREFIX);
        der.extend_from_slice(&self.0);
        der
    }

    /// Parses a `BEGIN PUBLIC KEY` PEM document holding an Ed25519 SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// Not PEM, not exactly one block, another label, or not Ed25519.
    pub fn from_spki_pem(pem: &str) -> Result<Self, KeyError> {
        let der = parse_single_pem(pem, PUBLIC_KEY_LABEL)?;
        Self::from_spki_der(&der)
    }

    /// This key as `BEGIN PUBLIC KEY` PEM (LF line endings), byte for byte what
    /// `openssl pkey -pubout` prints for it.
    pub fn to_spki_pem(&self) -> String {
        encode_pem(PUBLIC_KEY_LABEL, self.to_spki_der())
    }

    /// Reads a public key file (`BEGIN PUBLIC KEY`).
    ///
    /// # Errors
    /// [`KeyError::Read`] or [`KeyError::InFile`], both naming the path.
    pub fn read_pem_file(path: &Path) -> Result<Self, KeyError> {
        let (text, _mode) = read_key_file(path)?;
        if holds_label(&text, PRIVATE_KEY_LABEL) {
            return Err(KeyError::WrongHalf {
                path: path.to_path_buf(),
                found: "private",
                wanted: "public",
            });
        }
        Self::from_spki_pem(&text).map_err(in_file(path))
    }

    /// The key id: lowercase hex SHA-256 of the 32 raw bytes.
    pub fn key_id(&self) -> KeyId {
        KeyId(sha256_hex(&self.0))
    }

    /// Verifies an Ed25519 signature over `message`.
    ///
    /// # Errors
    /// [`KeyError::BadSignature`] when it does not verify (including a wrong length).
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), KeyError> {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(message, sig)
            .map_err(|_| KeyError::BadSignature)
    }
}

/// An Ed25519 signing key: ring's key pair and the PKCS#8 document it was loaded from.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public.key_id().as_str())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh key from the system's random source.
    ///
    /// # Errors
    /// [`KeyError::Generate`] if the random source fails.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8_der(doc.as_ref())
    }

    /// Loads a PKCS#8 v1 or v2 DER document.
    ///
    /// # Errors
    /// [`KeyError::Pkcs8`] if it is not an Ed25519 PKCS#8 key (or a v2 document whose public
    /// key does not match its private key).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| KeyError::Pkcs8 {
                reason: e.to_string(),
            })?;
        let raw: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| KeyError::Pkcs8 {
                reason: "public key is not 32 bytes".to_owned(),
            })?;
        Ok(SigningKey {
            pair,
            pkcs8: to_pkcs8_v1(der),
            public: PublicKey(raw),
        })
    }

    /// Parses a `BEGIN PRIVATE KEY` PEM document (PKCS#8 v1 or v2); what
    /// `openssl genpkey -algorithm ed25519` writes loads.
    ///
    /// # Errors
    /// Not PEM, not exactly one block, another label, or not an Ed25519 PKCS#8 key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let der = parse_single_pem(pem, PRIVATE_KEY_LABEL)?;
        Self::from_pkcs8_der(&der)
    }

    /// This key as `BEGIN PRIVATE KEY` PEM (LF endings): PKCS#8 v1 as `openssl genpkey` writes
    /// it for a generated key, otherwise the document it was loaded from.
    pub fn to_pkcs8_pem(&self) -> String {
        encode_pem(PRIVATE_KEY_LABEL, self.pkcs8.clone())
    }

    /// Reads a private key file. Refuses a file that is group/world readable or writable
    /// (mode & 0o077 != 0), naming path and mode (octal).
    ///
    /// # Errors
    /// [`KeyError::Read`], [`KeyError::InsecurePermissions`] or [`KeyError::InFile`].
    pub fn read_pem_file(path: &Path) -> Result<Self, KeyError> {
        let (text, mode) = read_key_file(path)?;
        // Before the mode check: a public key is 0644 by design, and "chmod 600" would be the
        // wrong advice for it.
        if holds_label(&text, PUBLIC_KEY_LABEL) {
            return Err(KeyError::WrongHalf {
                path: path.to_path_buf(),
                found: "public",
                wanted: "private",
            });
        }
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        Self::from_pkcs8_pem(&text).map_err(in_file(path))
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The key id of the public half.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig = self.pair.sign(message);
        let mut out = [0u8; 64];
        // An Ed25519 signature is always 64 bytes.
        out.copy_from_slice(sig.as_ref());
        out
    }
}

/// Generates a key and writes `PREFIX.key` (PKCS#8 PEM, mode 0600, created exclusively) and
/// `PREFIX.pub` (SPKI PEM, created exclusively). Returns the key and both paths.
///
/// # Errors
/// [`KeyError::Exists`] when either file already exists (nothing is overwritten; a key file
/// created by this call is removed again if the public file cannot be written);
/// [`KeyError::Write`] or [`KeyError::Generate`] otherwise.
pub fn write_keypair(prefix: &Path) -> Result<(SigningKey, PathBuf, PathBuf), KeyError> {
    let key_path = with_suffix(prefix, ".key");
    let pub_path = with_suffix(prefix, ".pub");
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        // `keygen --out keys/alice` in a fresh directory: make `keys/` (private, like the key).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| KeyError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    for path in [&key_path, &pub_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    let key = SigningKey::generate()?;
    write_new(&key_path, 0o600, key.to_pkcs8_pem().as_bytes())?;
    if let Err(e) = write_new(&pub_path, 0o644, key.public_key().to_spki_pem().as_bytes()) {
        // Best effort: do not leave half a key pair behind.
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key, key_path, pub_path))
}

/// DER prefix of a PKCS#8 v1 Ed25519 key (what `openssl genpkey` writes), before the 32-byte seed.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of ring's PKCS#8 v2 Ed25519 key, before the seed; the seed is followed by
/// `81 21 00` and the 32-byte public key.
const PKCS8_V2_RING_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Rewrites ring's PKCS#8 v2 document as v1 (seed only), because OpenSSL 3.0 cannot read the
/// v2 form and key files must be readable by `openssl`. Any other document is kept as is.
fn to_pkcs8_v1(der: &[u8]) -> Vec<u8> {
    match der.strip_prefix(&PKCS8_V2_RING_PREFIX[..]) {
        Some(rest) if rest.len() == 32 + 3 + 32 => {
            let mut v1 = PKCS8_V1_PREFIX.to_vec();
            v1.extend_from_slice(&rest[..32]);
            v1
        }
        _ => der.to_vec(),
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_new(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), KeyError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a key file as text, with the permission bits of the opened file (fstat, so the bits
/// belong to the very file that was read).
/// Whether `text` holds a PEM block with exactly this label.
fn holds_label(text: &str, label: &str) -> bool {
    text.contains(&format!("-----BEGIN {label}-----"))
}

fn read_key_file(path: &Path) -> Result<(String, u32), KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(read_err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_KEY_FILE_BYTES} bytes"),
        )));
    }
    Ok((text, mode))
}

fn parse_single_pem(text: &str, label: &'static str) -> Result<Vec<u8>, KeyError> {
    let mut blocks = pem::parse_many(text).map_err(KeyError::Pem)?;
    if blocks.len() != 1 {
        return Err(KeyError::PemCount {
            found: blocks.len(),
        });
    }
    let block = blocks.remove(0);
    if block.tag() != label {
        return Err(KeyError::PemLabel {
            expected: label,
            found: block.tag().to_owned(),
        });
    }
    Ok(block.into_contents())
}

fn encode_pem(label: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_round_trips_and_is_strict() {
        let pk = PublicKey::from_bytes([9; 32]);
        assert_eq!(pk.to_spki_der().len(), 44);
        assert_eq!(PublicKey::from_spki_der(&pk.to_spki_der()).unwrap(), pk);
        assert_eq!(PublicKey::from_spki_pem(&pk.to_spki_pem()).unwrap(), pk);
        let mut der = pk.to_spki_der();
        der[8] = 0x6e; // X25519's OID
        assert!(matches!(
            PublicKey::from_spki_der(&der),
            Err(KeyError::Spki { .. })
        ));
    }

    #[test]
    fn generated_keys_are_written_as_pkcs8_v1() {
        let key = SigningKey::generate().unwrap();
        let der = pem::parse(key.to_pkcs8_pem()).unwrap().into_contents();
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], PKCS8_V1_PREFIX);
        let again = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(again.public_key(), key.public_key());
    }

    /// A PEM public key file padded with newlines to exactly `len` bytes.
    fn padded_public_key(dir: &Path, len: usize) -> PathBuf {
        let mut text = PublicKey::from_bytes([7; 32]).to_spki_pem();
        text.push_str(&"\n".repeat(len - text.len()));
        let path = dir.join(format!("padded-{len}.pub"));
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn key_files_up_to_64_kib_are_read_and_one_byte_more_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let limit = usize::try_from(MAX_KEY_FILE_BYTES).unwrap();
        assert_eq!(limit, 65536);
        let at = PublicKey::read_pem_file(&padded_public_key(dir.path(), limit)).unwrap();
        assert_eq!(at, PublicKey::from_bytes([7; 32]));
        let over = PublicKey::read_pem_file(&padded_public_key(dir.path(), limit + 1));
        let err = over.unwrap_err();
        assert!(
            format!("{err:?}").contains("larger than 65536 bytes"),
            "{err:?}"
        );
        let far = PublicKey::read_pem_file(&padded_public_key(dir.path(), limit * 2));
        assert!(format!("{:?}", far.unwrap_err()).contains("larger than 65536 bytes"));
    }

    #[test]
    fn write_new_refuses_an_existing_file_by_name_and_reports_other_failures_as_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exists.key");
        fs::write(&path, b"keep me").unwrap();
        let err = write_new(&path, 0o600, b"new").unwrap_err();
        assert!(
            matches!(&err, KeyError::Exists { path: p } if *p == path),
            "{err:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"keep me");
        let missing = dir.path().join("no-such-dir").join("x.key");
        let err = write_new(&missing, 0o600, b"new").unwrap_err();
        assert!(matches!(err, KeyError::Write { .. }), "{err:?}");
    }

    #[test]
    fn only_a_whole_ring_v2_document_is_rewritten_as_v1() {
        let key = SigningKey::generate().unwrap();
        let v1 = pem::parse(key.to_pkcs8_pem()).unwrap().into_contents();
        // Another v1 document, or a v2 prefix with the wrong length, is kept as it is.
        assert_eq!(to_pkcs8_v1(&v1), v1);
        let short = [&PKCS8_V2_RING_PREFIX[..], &[5u8; 10]].concat();
        assert_eq!(to_pkcs8_v1(&short), short);
        let long = [&PKCS8_V2_RING_PREFIX[..], &[5u8; 68]].concat();
        assert_eq!(to_pkcs8_v1(&long), long);
        let whole = [&PKCS8_V2_RING_PREFIX[..], &[5u8; 67]].concat();
        assert_eq!(
            to_pkcs8_v1(&whole),
            [&PKCS8_V1_PREFIX[..], &[5u8; 32]].concat()
        );
    }

    #[test]
    fn debug_output_names_the_key_and_as_bytes_is_the_raw_key() {
        let raw: [u8; 32] = std::array::from_fn(|i| u8::try_from(i).unwrap());
        let pk = PublicKey::from_bytes(raw);
        assert_eq!(pk.as_bytes(), &raw);
        assert_eq!(pk.to_spki_der()[12..], raw);
        assert_eq!(
            format!("{pk:?}"),
            format!("PublicKey({})", hex::encode(raw))
        );
        let id = pk.key_id();
        assert_eq!(format!("{id:?}"), format!("KeyId({})", id.as_str()));
        assert_eq!(id.as_str().len(), 64);
    }

    #[test]
    fn key_id_rejects_what_is_not_lowercase_hex() {
        let id = PublicKey::from_bytes([0; 32]).key_id();
        assert_eq!(id.as_str().parse::<KeyId>().unwrap(), id);
        assert!(id.as_str().to_uppercase().parse::<KeyId>().is_err());
        assert!("".parse::<KeyId>().is_err());
    }
}
