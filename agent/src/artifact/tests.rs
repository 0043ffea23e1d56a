//! Tests of the unpacker (one per attack, each asserting the exact refusal and that nothing
//! was unpacked), the artifact store and releases: the shared fixtures here, the tests in
//! `tests/<module>.rs`.

use std::fs;

use std::io::{self, Read, Write};

use std::os::unix::fs::PermissionsExt;

use std::path::{Path, PathBuf};

use std::time::Duration;

use flate2::Compression;

use flate2::write::GzEncoder;

use tar::{EntryType, Header};

use super::*;

use crate::job::{HealthSpec, Probe, ReleaseSpec, Sha256Hex, StrategyKind};

const MIB: u64 = 1024 * 1024;

fn limits() -> UnpackLimits {
    UnpackLimits {
        max_total_bytes: 10 * MIB,
        max_entries: 1000,
    }
}

/// A sandbox: `art.tgz`, the destination's parent `releases/`, and `outside/`, which must stay
/// empty whatever the archive holds.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("releases")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        Self { dir }
    }
    fn artifact(&self) -> PathBuf {
        self.dir.path().join("art.tgz")
    }
    fn parent(&self) -> PathBuf {
        self.dir.path().join("releases")
    }
    fn dest(&self) -> PathBuf {
        self.parent().join("1.0.0")
    }

    /// Writes `tgz` as the artifact and unpacks it with its own digest.
    fn unpack_with(&self, tgz: &[u8], limits: &UnpackLimits) -> Result<(), UnpackError> {
        fs::write(self.artifact(), tgz).unwrap();
        unpack_release(&self.artifact(), &Sha256Hex::of(tgz), &self.dest(), limits)
    }

    fn unpack(&self, tgz: &[u8]) -> Result<(), UnpackError> {
        self.unpack_with(tgz, &limits())
    }

    /// Nothing was unpacked: no destination, no temp directory, nothing outside.
    fn assert_nothing_unpacked(&self) {
        assert!(
            fs::symlink_metadata(self.dest()).is_err(),
            "destination exists"
        );
        assert_eq!(
            names(&self.parent()),
            Vec::<String>::new(),
            "leftovers beside dest"
        );
        self.assert_outside_untouched();
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(
            names(&self.dir.path().join("outside")),
            Vec::<String>::new()
        );
        let mut top = names(self.dir.path());
        top.retain(|n| n != "art.tgz");
        assert_eq!(top, ["outside", "releases"]);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Builds a tar in memory, writing raw headers so that names the `tar` crate's own setters
/// refuse (`..`, absolute paths) can be written too.
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Tar {
    fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, name: &[u8], link: &[u8], size: u64, mode: u32) -> Header {
        let mut h = Header::new_ustar();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name);
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        h
    }

    fn raw(mut self, kind: EntryType, name: &str, link: &str, data: &[u8], mode: u32) -> Self {
        let h = Self::header(
            kind,
            name.as_bytes(),
            link.as_bytes(),
            data.len() as u64,
            mode,
        );
        self.b.append(&h, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.raw(EntryType::Regular, name, "", data, 0o644)
    }

    fn exe(self, name: &str, data: &[u8]) -> Self {
        self.raw(EntryType::Regular, name, "", data, 0o775)
    }

    fn dir(self, name: &str) -> Self {
        self.raw(EntryType::Directory, name, "", b"", 0o755)
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(EntryType::Symlink, name, target, b"", 0o777)
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.raw(EntryType::Link, name, target, b"", 0o644)
    }

    /// A PAX extended header whose `size` record applies to the next entry.
    fn pax_size(mut self, size: u64) -> Self {
        let body = format!(" size={size}\n");
        // The record length counts its own digits.
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        let record = format!("{len}{body}");
        let h = Self::header(
            EntryType::XHeader,
            b"PaxHeaders/x",
            b"",
            record.len() as u64,
            0o644,
        );
        self.b.append(&h, record.as_bytes()).unwrap();
        self
    }

    /// Raw bytes straight into the archive stream (to follow a header written with a size
    /// other than its data's).
    fn bytes(mut self, data: &[u8]) -> Self {
        self.b.get_mut().extend_from_slice(data);
        self
    }

    fn tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }

    fn tgz(self) -> Vec<u8> {
        gz(&self.tar())
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

mod releases;
mod resume;
mod store;
mod unpack;
mod unpack_props;
