//! Tests of the unpacker (one per attack, each asserting the exact refusal and that nothing
//! was unpacked), the artifact store and releases.

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

// ---------------------------------------------------------------------------------------------
// Happy paths

#[test]
fn nested_dirs_files_exec_bit_and_inner_symlink_unpack() {
    let sb = Sandbox::new();
    let tgz = Tar::new()
        .dir("./")
        .dir("bin/")
        .exe("bin/server", b"#!/bin/sh\necho hi\n")
        .file("share/doc/deep/README", b"readme")
        .raw(EntryType::Regular, "conf.toml", "", b"x=1", 0o666)
        .symlink("share/current", "doc/deep")
        .symlink("share/doc/up", "../../bin/server")
        .hardlink("bin/server-again", "bin/server")
        .tgz();
    sb.unpack(&tgz).unwrap();

    let d = sb.dest();
    assert_eq!(
        fs::read(d.join("bin/server")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        fs::read(d.join("share/doc/deep/README")).unwrap(),
        b"readme"
    );
    assert_eq!(mode_of(&d.join("bin/server")), 0o755, "owner exec bit kept");
    assert_eq!(
        mode_of(&d.join("conf.toml")),
        0o644,
        "group/world write dropped"
    );
    assert_eq!(
        mode_of(&d.join("share/doc/deep")),
        0o755,
        "implicit parents are 0755"
    );
    assert_eq!(mode_of(&d), 0o755, "release root traversable");
    assert_eq!(
        fs::read_link(d.join("share/current")).unwrap(),
        Path::new("doc/deep")
    );
    assert_eq!(fs::read(d.join("share/current/README")).unwrap(), b"readme");
    assert_eq!(
        fs::read(d.join("share/doc/up")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        fs::read(d.join("bin/server-again")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        names(&sb.parent()),
        ["1.0.0"],
        "no temp dir left beside the release"
    );
    sb.assert_outside_untouched();
}

#[test]
fn explicit_dir_after_its_children_is_not_a_duplicate() {
    let sb = Sandbox::new();
    sb.unpack(&Tar::new().file("a/b.txt", b"b").dir("a/").tgz())
        .unwrap();
    assert_eq!(fs::read(sb.dest().join("a/b.txt")).unwrap(), b"b");
}

#[test]
fn empty_archive_unpacks_to_an_empty_release() {
    let sb = Sandbox::new();
    sb.unpack(&Tar::new().tgz()).unwrap();
    assert_eq!(names(&sb.dest()), Vec::<String>::new());
}

#[test]
fn pax_global_header_is_skipped() {
    let sb = Sandbox::new();
    let record = "52 comment=0123456789012345678901234567890123456789\n";
    let h = Tar::header(
        EntryType::XGlobalHeader,
        b"pax_global_header",
        b"",
        52,
        0o644,
    );
    assert_eq!(record.len(), 52);
    let mut t = Tar::new();
    t.b.append(&h, record.as_bytes()).unwrap();
    sb.unpack(&t.file("app", b"x").tgz()).unwrap();
    assert_eq!(names(&sb.dest()), ["app"]);
}

// ---------------------------------------------------------------------------------------------
// Attacks: one test each, the exact refusal, nothing unpacked.

#[test]
fn wrong_digest_is_refused_before_reading_any_entry() {
    let sb = Sandbox::new();
    // Not even gzip: a reader would fail as Malformed; the digest check comes first.
    fs::write(sb.artifact(), b"not a tarball").unwrap();
    let expected = Sha256Hex::of(b"something else");
    let err = unpack_release(&sb.artifact(), &expected, &sb.dest(), &limits()).unwrap_err();
    match &err {
        UnpackError::DigestMismatch {
            expected: e,
            actual,
            ..
        } => {
            assert_eq!(e, &expected);
            assert_eq!(actual, &Sha256Hex::of(b"not a tarball"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains(expected.as_str()), "{err}");
    sb.assert_nothing_unpacked();
}

#[test]
fn absolute_path_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .unpack(&Tar::new().file("ok", b"1").file("/tmp/evil", b"x").tgz())
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::AbsolutePath { path } if path == "/tmp/evil"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn dotdot_traversal_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .unpack(&Tar::new().file("a/../../outside/x", b"x").tgz())
        .unwrap_err();
    assert!(matches!(&err, UnpackError::ParentDir { path } if path == "a/../../outside/x"));
    assert!(err.to_string().contains("a/../../outside/x"), "{err}");
    sb.assert_nothing_unpacked();
}

#[test]
fn path_normalising_to_empty_is_refused_for_files() {
    let sb = Sandbox::new();
    let err = sb.unpack(&Tar::new().file("./", b"x").tgz()).unwrap_err();
    assert!(
        matches!(&err, UnpackError::EmptyPath { path } if path == "./"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn symlink_escape_absolute_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .unpack(&Tar::new().symlink("etc", "/etc").tgz())
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::SymlinkEscape { path, target } if path == "etc" && target == "/etc"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn symlink_escape_relative_is_refused() {
    let sb = Sandbox::new();
    // From a/, one `..` reaches the root, the second leaves it.
    let err = sb
        .unpack(&Tar::new().symlink("a/out", "../../outside").tgz())
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::SymlinkEscape { path, target } if path == "a/out" && target == "../../outside"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn symlink_chain_escape_is_refused() {
    let sb = Sandbox::new();
    // a/up -> .. is the root (allowed), but up2 -> a/up/.. would be the root's parent.
    let tgz = Tar::new()
        .symlink("a/up", "..")
        .symlink("up2", "a/up/..")
        .tgz();
    let err = sb.unpack(&tgz).unwrap_err();
    assert!(
        matches!(&err, UnpackError::SymlinkEscape { path, .. } if path == "up2"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn symlink_then_file_written_through_it_is_refused() {
    let sb = Sandbox::new();
    // The link itself stays inside; the write through it is what is refused.
    let tgz = Tar::new()
        .dir("sub/")
        .symlink("link", "sub")
        .file("link/evil", b"x")
        .tgz();
    let err = sb.unpack(&tgz).unwrap_err();
    assert!(
        matches!(&err, UnpackError::ThroughSymlink { path, link } if path == "link/evil" && link == "link"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn symlink_then_same_name_file_is_refused_as_duplicate() {
    let sb = Sandbox::new();
    let tgz = Tar::new().symlink("app", "sub/app").file("app", b"x").tgz();
    let err = sb.unpack(&tgz).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Duplicate { path } if path == "app"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn file_as_parent_directory_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .unpack(&Tar::new().file("a", b"x").file("a/b", b"y").tgz())
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::NotADirectory { path, parent } if path == "a/b" && parent == "a"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn hardlink_escape_is_refused() {
    for target in ["../../outside/x", "/etc/passwd", "never-written", "dir"] {
        let sb = Sandbox::new();
        let tgz = Tar::new().dir("dir/").hardlink("h", target).tgz();
        let err = sb.unpack(&tgz).unwrap_err();
        assert!(
            matches!(&err, UnpackError::HardLink { path, target: t } if path == "h" && t == target),
            "{target}: {err:?}"
        );
        sb.assert_nothing_unpacked();
    }
}

#[test]
fn hardlink_through_symlink_is_refused() {
    let sb = Sandbox::new();
    let tgz = Tar::new()
        .file("real/f", b"x")
        .symlink("l", "real")
        .hardlink("h", "l/f")
        .tgz();
    let err = sb.unpack(&tgz).unwrap_err();
    assert!(
        matches!(&err, UnpackError::HardLink { path, .. } if path == "h"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn device_file_is_refused() {
    for (kind, name) in [
        (EntryType::Char, "character device"),
        (EntryType::Block, "block device"),
    ] {
        let sb = Sandbox::new();
        let err = sb
            .unpack(&Tar::new().raw(kind, "dev/sda", "", b"", 0o600).tgz())
            .unwrap_err();
        assert!(
            matches!(&err, UnpackError::SpecialFile { path, kind } if path == "dev/sda" && *kind == name),
            "{err:?}"
        );
        sb.assert_nothing_unpacked();
    }
}

#[test]
fn fifo_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .unpack(
            &Tar::new()
                .raw(EntryType::Fifo, "pipe", "", b"", 0o644)
                .tgz(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::SpecialFile { path, kind: "fifo" } if path == "pipe"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn setuid_bit_is_refused() {
    for mode in [0o4755, 0o2755, 0o1755] {
        let sb = Sandbox::new();
        let tgz = Tar::new()
            .raw(EntryType::Regular, "bin/su", "", b"x", mode)
            .tgz();
        let err = sb.unpack(&tgz).unwrap_err();
        assert!(
            matches!(&err, UnpackError::SpecialBits { path, mode: m } if path == "bin/su" && *m == mode),
            "{err:?}"
        );
        assert!(err.to_string().contains("bin/su"), "{err}");
        sb.assert_nothing_unpacked();
    }
}

#[test]
fn setgid_directory_is_refused() {
    let sb = Sandbox::new();
    let err = sb
        .unpack(
            &Tar::new()
                .raw(EntryType::Directory, "d/", "", b"", 0o2775)
                .tgz(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::SpecialBits { path, .. } if path == "d/"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn duplicate_paths_are_refused() {
    let sb = Sandbox::new();
    let tgz = Tar::new().file("app", b"good").file("./app", b"evil").tgz();
    let err = sb.unpack(&tgz).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Duplicate { path } if path == "./app"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn pax_ustar_size_mismatch_is_refused() {
    let sb = Sandbox::new();
    // The ustar header says 0 bytes (a parser ignoring PAX sees the next header right after);
    // PAX says 512, which swallows the block below as data.
    let mut hidden = Tar::new().file("hidden", b"smuggled").tar();
    hidden.truncate(512);
    let tgz = Tar::new()
        .pax_size(512)
        .file("a.txt", b"")
        .bytes(&hidden)
        .tgz();
    let err = sb.unpack(&tgz).unwrap_err();
    assert!(
        matches!(&err, UnpackError::SizeMismatch { path, header: 0, pax: 512 } if path == "a.txt"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn too_many_entries_are_refused() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    for i in 0..4 {
        t = t.file(&format!("f{i}"), b"x");
    }
    let err = sb
        .unpack_with(
            &t.tgz(),
            &UnpackLimits {
                max_total_bytes: MIB,
                max_entries: 3,
            },
        )
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooManyEntries { path, limit: 3 } if path == "f3"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn total_bytes_over_limit_are_refused() {
    let sb = Sandbox::new();
    let tgz = Tar::new()
        .file("a", &[1u8; 600])
        .file("b", &[2u8; 600])
        .tgz();
    let err = sb
        .unpack_with(
            &tgz,
            &UnpackLimits {
                max_total_bytes: 1000,
                max_entries: 10,
            },
        )
        .unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooLarge { path, limit: 1000 } if path == "b"),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

/// Reads `remaining` zero bytes, counting how many were asked for.
struct Zeros {
    remaining: u64,
}

impl Read for Zeros {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        buf[..n].fill(0);
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[test]
fn compression_bomb_stops_at_the_limit() {
    let sb = Sandbox::new();
    let size = 200 * MIB;
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
    let h = Tar::header(EntryType::Regular, b"zeros", b"", size, 0o644);
    b.append(&h, Zeros { remaining: size }).unwrap();
    let tgz = b.into_inner().unwrap().finish().unwrap();
    assert!(tgz.len() < 2 * MIB as usize, "bomb is {} bytes", tgz.len());

    let err = sb.unpack(&tgz).unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooLarge { path, limit } if path == "zeros" && *limit == 10 * MIB),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn huge_extension_header_stops_at_the_stream_cap() {
    let sb = Sandbox::new();
    // A PAX header the tar reader would buffer whole: the decompressed stream is capped near
    // max_total_bytes plus per-entry header slack, so it stops there instead.
    let size = 64 * MIB;
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::best()));
    let h = Tar::header(EntryType::XHeader, b"PaxHeaders/x", b"", size, 0o644);
    b.append(&h, Zeros { remaining: size }).unwrap();
    let tgz = b.into_inner().unwrap().finish().unwrap();
    let limits = UnpackLimits {
        max_total_bytes: MIB,
        max_entries: 10,
    };
    let err = sb.unpack_with(&tgz, &limits).unwrap_err();
    assert!(
        matches!(&err, UnpackError::TooLarge { limit, .. } if *limit == MIB),
        "{err:?}"
    );
    sb.assert_nothing_unpacked();
}

#[test]
fn data_on_a_directory_entry_is_refused() {
    let sb = Sandbox::new();
    let tgz = Tar::new()
        .raw(EntryType::Directory, "d/", "", &[0u8; 100], 0o755)
        .tgz();
    let err = sb.unpack(&tgz).unwrap_err();
    assert!(matches!(&err, UnpackError::UnexpectedData { path, size: 100 } if path == "d/"));
    sb.assert_nothing_unpacked();
}

#[test]
fn truncated_archive_is_refused() {
    let sb = Sandbox::new();
    let mut t = Tar::new().file("big", &[7u8; 4096]).tar();
    t.truncate(512 + 1000);
    let err = sb.unpack(&gz(&t)).unwrap_err();
    assert!(matches!(&err, UnpackError::Truncated { path, expected: 4096, .. } if path == "big"));
    sb.assert_nothing_unpacked();
}

#[test]
fn garbage_is_refused_as_malformed() {
    let sb = Sandbox::new();
    let err = sb.unpack(b"\x1f\x8b not really gzip").unwrap_err();
    assert!(matches!(&err, UnpackError::Malformed { .. }), "{err:?}");
    sb.assert_nothing_unpacked();
}

#[test]
fn existing_destination_is_refused_and_kept() {
    let sb = Sandbox::new();
    fs::create_dir(sb.dest()).unwrap();
    fs::write(sb.dest().join("keep"), b"k").unwrap();
    let err = sb.unpack(&Tar::new().file("app", b"x").tgz()).unwrap_err();
    assert!(
        matches!(&err, UnpackError::DestExists { dest } if *dest == sb.dest()),
        "{err:?}"
    );
    assert_eq!(names(&sb.dest()), ["keep"]);
    assert_eq!(names(&sb.parent()), ["1.0.0"]);
}

// ---------------------------------------------------------------------------------------------
// Property tests: nothing panics, nothing lands outside the release.

mod props {
    use proptest::prelude::*;

    use super::*;

    /// After any unpack: either the release exists (and every link in it resolves inside it)
    /// or nothing does; nothing else was created anywhere in the sandbox.
    fn check_contained(sb: &Sandbox, result: &Result<(), UnpackError>) {
        sb.assert_outside_untouched();
        match result {
            Ok(()) => {
                assert_eq!(names(&sb.parent()), ["1.0.0"]);
                let root = fs::canonicalize(sb.dest()).unwrap();
                let mut stack = vec![sb.dest()];
                while let Some(dir) = stack.pop() {
                    for e in fs::read_dir(&dir).unwrap() {
                        let e = e.unwrap();
                        let t = e.file_type().unwrap();
                        if t.is_dir() {
                            stack.push(e.path());
                        } else if t.is_symlink() {
                            if let Ok(real) = fs::canonicalize(e.path()) {
                                assert!(real.starts_with(&root), "{:?} -> {real:?}", e.path());
                            }
                            // Dangling links too: relative, and not above the root.
                            let target = fs::read_link(e.path()).unwrap();
                            assert!(target.is_relative(), "{:?} -> {target:?}", e.path());
                            let depth = e
                                .path()
                                .strip_prefix(sb.dest())
                                .unwrap()
                                .components()
                                .count()
                                - 1;
                            let ups = target
                                .components()
                                .filter(|c| matches!(c, std::path::Component::ParentDir))
                                .count();
                            assert!(ups <= depth, "{:?} -> {target:?}", e.path());
                        } else {
                            assert!(t.is_file(), "{:?} is special", e.path());
                            assert_eq!(mode_of(&e.path()) & 0o7022, 0);
                        }
                    }
                }
            }
            Err(_) => assert_eq!(names(&sb.parent()), Vec::<String>::new()),
        }
    }

    /// Arbitrary bytes from an alphabet rich in separators and dots.
    fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
        let alphabet = vec![b'a', b'b', b'/', b'/', b'.', b'.', b'\\', b' ', 0xff, b'~'];
        prop::collection::vec(prop::sample::select(alphabet), 0..24)
    }

    /// Paths built from components, most of them plausible, some hostile.
    fn component_names() -> impl Strategy<Value = Vec<u8>> {
        let parts = vec!["a", "b", "a", "b", "c", "..", ".", "", "outside", "/etc"];
        prop::collection::vec(prop::sample::select(parts), 1..5)
            .prop_map(|parts| parts.join("/").into_bytes())
    }

    fn any_name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![1 => name_bytes(), 3 => component_names()]
    }

    /// (kind selector, name, link target, data, mode).
    type RawEntry = (u8, Vec<u8>, Vec<u8>, Vec<u8>, u32);

    fn entry() -> impl Strategy<Value = RawEntry> {
        (
            0u8..8,
            any_name(),
            any_name(),
            prop::collection::vec(any::<u8>(), 0..64),
            prop_oneof![6 => Just(0o644u32), 3 => Just(0o755), 1 => Just(0o777), 1 => Just(0o4755)],
        )
    }

    fn build(entries: &[RawEntry]) -> Vec<u8> {
        let mut t = Tar::new();
        for (kind, name, link, data, mode) in entries {
            let (kind, data): (EntryType, &[u8]) = match kind {
                0 | 1 => (EntryType::Regular, data),
                2 => (EntryType::Directory, b""),
                3 | 4 => (EntryType::Symlink, b""),
                5 => (EntryType::Link, b""),
                6 => (EntryType::Symlink, b""),
                _ if data.len() == 63 => (EntryType::Fifo, b""),
                _ => (EntryType::Regular, b""),
            };
            let h = Tar::header(kind, name, link, data.len() as u64, *mode);
            t.b.append(&h, data).unwrap();
        }
        t.tgz()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic_or_escape(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let sb = Sandbox::new();
            let result = sb.unpack(&bytes);
            check_contained(&sb, &result);
            // Gzipped, the same bytes reach the tar parser.
            let sb = Sandbox::new();
            let result = sb.unpack(&gz(&bytes));
            check_contained(&sb, &result);
        }

        #[test]
        fn arbitrary_links_never_escape(
            links in prop::collection::vec((component_names(), component_names(), any::<bool>()), 1..4)
        ) {
            let mut t = Tar::new();
            for (name, target, hard) in &links {
                let kind = if *hard { EntryType::Link } else { EntryType::Symlink };
                t.b.append(&Tar::header(kind, name, target, 0, 0o777), &b""[..]).unwrap();
            }
            let sb = Sandbox::new();
            let result = sb.unpack(&t.tgz());
            check_contained(&sb, &result);
        }

        #[test]
        fn arbitrary_entries_never_panic_or_escape(entries in prop::collection::vec(entry(), 1..8)) {
            let sb = Sandbox::new();
            let result = sb.unpack(&build(&entries));
            check_contained(&sb, &result);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store

fn store() -> (tempfile::TempDir, ArtifactStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(&dir.path().join("artifacts"), 1000).unwrap();
    (dir, store)
}

fn objects(dir: &tempfile::TempDir) -> Vec<String> {
    names(&dir.path().join("artifacts/sha256"))
}

#[test]
fn upload_in_chunks_is_stored_under_its_digest() {
    let (dir, store) = store();
    let data = b"release bytes".repeat(10);
    let digest = Sha256Hex::of(&data);
    assert!(!store.contains(&digest, data.len() as u64));
    let mut up = store.begin_upload(&digest, data.len() as u64).unwrap();
    for chunk in data.chunks(7) {
        up.write(chunk).unwrap();
    }
    up.finish().unwrap();
    assert!(store.contains(&digest, data.len() as u64));
    assert!(
        !store.contains(&digest, data.len() as u64 + 1),
        "size is part of contains"
    );
    assert_eq!(fs::read(store.path_of(&digest)).unwrap(), data);
    assert_eq!(mode_of(&store.path_of(&digest)), 0o600);
    assert_eq!(objects(&dir), [digest.as_str()]);
}

#[test]
fn oversize_upload_is_refused_and_leaves_nothing() {
    let (dir, store) = store();
    let digest = Sha256Hex::of(b"0123456789");
    let mut up = store.begin_upload(&digest, 10).unwrap();
    up.write(b"01234").unwrap();
    let err = up.write(b"567890").unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Oversize { declared: 10, .. }),
        "{err:?}"
    );
    assert!(matches!(
        up.write(b"x"),
        Err(ArtifactError::UploadFailed { .. })
    ));
    assert!(matches!(
        up.finish(),
        Err(ArtifactError::UploadFailed { .. })
    ));
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn declared_size_over_store_maximum_is_refused() {
    let (dir, store) = store();
    let err = store.begin_upload(&Sha256Hex::of(b"x"), 1001).unwrap_err();
    assert!(
        matches!(
            &err,
            ArtifactError::TooLarge {
                size: 1001,
                max: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn upload_with_wrong_digest_is_refused_and_leaves_nothing() {
    let (dir, store) = store();
    let expected = Sha256Hex::of(b"good");
    let mut up = store.begin_upload(&expected, 4).unwrap();
    up.write(b"evil").unwrap();
    let err = up.finish().unwrap_err();
    match &err {
        ArtifactError::DigestMismatch {
            expected: e,
            actual,
        } => {
            assert_eq!(e, &expected);
            assert_eq!(actual, &Sha256Hex::of(b"evil"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(expected.as_str()) && msg.contains(Sha256Hex::of(b"evil").as_str()));
    assert!(!store.contains(&expected, 4));
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn short_upload_is_refused() {
    let (dir, store) = store();
    let mut up = store.begin_upload(&Sha256Hex::of(b"abcd"), 4).unwrap();
    up.write(b"abc").unwrap();
    let err = up.finish().unwrap_err();
    assert!(matches!(
        &err,
        ArtifactError::SizeMismatch {
            expected: 4,
            actual: 3,
            ..
        }
    ));
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn dropped_upload_removes_its_temp_file() {
    let (dir, store) = store();
    let mut up = store.begin_upload(&Sha256Hex::of(b"abcd"), 4).unwrap();
    up.write(b"ab").unwrap();
    let temps = objects(&dir);
    assert_eq!(temps.len(), 1);
    assert!(temps[0].starts_with(".upload-"), "{temps:?}");
    assert_eq!(
        mode_of(&dir.path().join("artifacts/sha256").join(&temps[0])),
        0o600
    );
    drop(up);
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn store_remove_leftovers_removes_only_upload_temps_and_never_follows_links() {
    let (dir, store) = store();
    let data = b"kept artifact".to_vec();
    let digest = Sha256Hex::of(&data);
    let mut up = store.begin_upload(&digest, data.len() as u64).unwrap();
    up.write(&data).unwrap();
    up.finish().unwrap();
    let objects_dir = dir.path().join("artifacts/sha256");
    // What a crash leaves: a partial upload; plus a link and a directory under that prefix.
    fs::write(objects_dir.join(".upload-0123456789abcdef"), b"partial").unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"outside").unwrap();
    std::os::unix::fs::symlink(&outside, objects_dir.join(".upload-link")).unwrap();
    fs::create_dir(objects_dir.join(".upload-dir")).unwrap();
    fs::write(objects_dir.join(".upload-dir/f"), b"x").unwrap();
    fs::write(objects_dir.join("other"), b"not a temp").unwrap();

    let mut removed = store.remove_leftovers().unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            objects_dir.join(".upload-0123456789abcdef"),
            objects_dir.join(".upload-dir"),
            objects_dir.join(".upload-link"),
        ]
    );
    assert_eq!(objects(&dir), [digest.as_str(), "other"]);
    assert!(store.contains(&digest, data.len() as u64));
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"outside");
    // Nothing left: a second call removes nothing.
    assert_eq!(store.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------------------------------------
// Releases

fn spec(version: &str, tgz: &[u8]) -> ReleaseSpec {
    ReleaseSpec {
        version: semver::Version::parse(version).unwrap(),
        artifact_sha256: Sha256Hex::of(tgz),
        artifact_size: tgz.len() as u64,
        strategy: StrategyKind::Hot,
        instances: 1,
        command: vec!["./bin/server".to_owned()],
        health: HealthSpec {
            probe: Probe::Tcp,
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            deadline: Duration::from_secs(10),
        },
        env: Default::default(),
        secret_env: Default::default(),
        rollout: Default::default(),
        progress_deadline: Duration::from_secs(60),
    }
}

struct App {
    dir: tempfile::TempDir,
    store: ArtifactStore,
    releases: Releases,
}

impl App {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(&dir.path().join("artifacts"), 10 * MIB).unwrap();
        let releases = Releases::new(&dir.path().join("apps/web"));
        Self {
            dir,
            store,
            releases,
        }
    }

    fn upload(&self, tgz: &[u8]) {
        let mut up = self
            .store
            .begin_upload(&Sha256Hex::of(tgz), tgz.len() as u64)
            .unwrap();
        up.write(tgz).unwrap();
        up.finish().unwrap();
    }

    /// Uploads and installs a release whose `VERSION` file holds its version.
    fn install(&self, version: &str) -> PathBuf {
        let tgz = Tar::new().file("VERSION", version.as_bytes()).tgz();
        self.upload(&tgz);
        self.releases
            .install(&self.store, &spec(version, &tgz), &limits())
            .unwrap()
    }
}

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).unwrap()
}

#[test]
fn install_unpacks_once_and_is_idempotent() {
    let app = App::new();
    let dir = app.install("1.2.3");
    assert_eq!(dir, app.dir.path().join("apps/web/releases/1.2.3"));
    assert_eq!(fs::read(dir.join("VERSION")).unwrap(), b"1.2.3");
    assert_eq!(mode_of(&app.dir.path().join("apps/web")), 0o755);
    assert_eq!(mode_of(&app.dir.path().join("apps/web/releases")), 0o755);
    assert!(app.releases.is_on_disk(&v("1.2.3")));
    fs::write(dir.join("marker"), b"").unwrap();
    assert_eq!(app.install("1.2.3"), dir);
    assert!(
        dir.join("marker").exists(),
        "second install must not touch the release"
    );
}

#[test]
fn install_without_artifact_is_refused() {
    let app = App::new();
    let tgz = Tar::new().file("VERSION", b"1").tgz();
    let err = app
        .releases
        .install(&app.store, &spec("1.0.0", &tgz), &limits())
        .unwrap_err();
    assert!(matches!(&err, ArtifactError::Missing { .. }), "{err:?}");
    assert!(!app.releases.is_on_disk(&v("1.0.0")));
}

#[test]
fn install_of_hostile_archive_leaves_nothing() {
    let app = App::new();
    let tgz = Tar::new().file("ok", b"1").symlink("l", "/etc").tgz();
    app.upload(&tgz);
    let err = app
        .releases
        .install(&app.store, &spec("2.0.0", &tgz), &limits())
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ArtifactError::Unpack {
                source: UnpackError::SymlinkEscape { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(names(&app.releases.releases_dir()), Vec::<String>::new());
}

#[test]
fn activate_switches_current_atomically_with_a_relative_link() {
    let app = App::new();
    assert_eq!(app.releases.current(), None);
    app.install("1.0.0");
    app.install("1.1.0");
    let err = app.releases.activate(&v("9.9.9")).unwrap_err();
    assert!(matches!(&err, ArtifactError::NotOnDisk { .. }), "{err:?}");
    app.releases.activate(&v("1.0.0")).unwrap();
    assert_eq!(app.releases.current(), Some(v("1.0.0")));
    app.releases.activate(&v("1.1.0")).unwrap();
    assert_eq!(app.releases.current(), Some(v("1.1.0")));
    let app_dir = app.dir.path().join("apps/web");
    assert_eq!(
        fs::read_link(app_dir.join("current")).unwrap(),
        Path::new("releases/1.1.0")
    );
    assert_eq!(fs::read(app_dir.join("current/VERSION")).unwrap(), b"1.1.0");
    assert_eq!(
        names(&app_dir),
        ["current", "release-digests", "releases"],
        "no temp link left"
    );
}

#[test]
fn on_disk_lists_only_canonical_versions_sorted() {
    let app = App::new();
    for ver in ["1.10.0", "1.2.0", "1.2.0-rc.1"] {
        app.install(ver);
    }
    let rel = app.releases.releases_dir();
    fs::create_dir(rel.join(".unpack-3.0.0-abc")).unwrap();
    fs::create_dir(rel.join("01.0.0")).unwrap();
    fs::write(rel.join("4.0.0"), b"a file, not a release").unwrap();
    assert_eq!(
        app.releases.on_disk().unwrap(),
        [v("1.2.0-rc.1"), v("1.2.0"), v("1.10.0")]
    );
}

#[test]
fn prune_keeps_newest_and_never_deletes_protected_or_current() {
    let app = App::new();
    for ver in ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"] {
        app.install(ver);
    }
    app.releases.activate(&v("1.1.0")).unwrap();
    // 6 on disk, keep 3: delete 3 of the oldest, skipping current (1.1.0) and 1.0.0.
    let removed = app.releases.prune(3, &[v("1.0.0")]).unwrap();
    assert_eq!(removed, [v("1.2.0"), v("1.3.0"), v("1.4.0")]);
    assert_eq!(
        app.releases.on_disk().unwrap(),
        [v("1.0.0"), v("1.1.0"), v("1.5.0")]
    );
    assert_eq!(
        names(&app.releases.releases_dir()),
        ["1.0.0", "1.1.0", "1.5.0"]
    );
    // Nothing left to prune without touching protected ones.
    assert_eq!(
        app.releases.prune(1, &[v("1.0.0"), v("1.5.0")]).unwrap(),
        Vec::new()
    );
    assert_eq!(app.releases.current(), Some(v("1.1.0")));
}

#[test]
fn releases_remove_leftovers_removes_partial_unpacks_and_temp_links_only() {
    let app = App::new();
    app.install("1.0.0");
    app.install("1.1.0");
    app.releases.activate(&v("1.1.0")).unwrap();
    let app_dir = app.dir.path().join("apps/web");
    let rel = app.releases.releases_dir();
    // What a crash leaves: a partial unpack (with content), a temp `current` link.
    fs::create_dir_all(rel.join(".unpack-2.0.0-0123456789abcdef/bin")).unwrap();
    fs::write(rel.join(".unpack-2.0.0-0123456789abcdef/bin/server"), b"x").unwrap();
    // ... and a release half deleted by a prune.
    fs::create_dir_all(rel.join(".prune-0.9.0-0123456789abcdef/bin")).unwrap();
    std::os::unix::fs::symlink(
        "releases/1.0.0",
        app_dir.join("current.tmp-0123456789abcdef"),
    )
    .unwrap();
    // A link named like a partial unpack, pointing at a directory outside: the link goes, the
    // directory and its file stay.
    let outside = app.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"outside").unwrap();
    std::os::unix::fs::symlink(&outside, rel.join(".unpack-x")).unwrap();
    // Not leftovers: other files, and prefixes in the wrong directory.
    fs::write(rel.join("notes"), b"keep").unwrap();
    fs::write(rel.join("current.tmp-elsewhere"), b"keep").unwrap();
    fs::write(app_dir.join(".unpack-elsewhere"), b"keep").unwrap();
    fs::write(app_dir.join("state.json"), b"{}").unwrap();

    let mut removed = app.releases.remove_leftovers().unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            app_dir.join("current.tmp-0123456789abcdef"),
            rel.join(".prune-0.9.0-0123456789abcdef"),
            rel.join(".unpack-2.0.0-0123456789abcdef"),
            rel.join(".unpack-x"),
        ]
    );
    assert_eq!(
        names(&rel),
        ["1.0.0", "1.1.0", "current.tmp-elsewhere", "notes"]
    );
    assert_eq!(
        names(&app_dir),
        [
            ".unpack-elsewhere",
            "current",
            "release-digests",
            "releases",
            "state.json"
        ]
    );
    assert_eq!(app.releases.current(), Some(v("1.1.0")));
    assert_eq!(fs::read(app_dir.join("current/VERSION")).unwrap(), b"1.1.0");
    assert_eq!(fs::read(rel.join("1.0.0/VERSION")).unwrap(), b"1.0.0");
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"outside");
    assert_eq!(
        app.releases.remove_leftovers().unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn releases_remove_leftovers_of_an_app_never_installed_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Releases::new(&dir.path().join("apps/none"));
    assert_eq!(missing.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
    let empty_app = dir.path().join("apps/empty");
    fs::create_dir_all(&empty_app).unwrap();
    assert_eq!(
        Releases::new(&empty_app).remove_leftovers().unwrap(),
        Vec::<PathBuf>::new()
    );
    assert_eq!(names(&empty_app), Vec::<String>::new());
}

#[test]
fn remove_leftovers_error_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let app_dir = dir.path().join("apps/web");
    fs::create_dir_all(&app_dir).unwrap();
    // `releases` is a file: listing it fails, and the error says which path.
    fs::write(app_dir.join("releases"), b"not a directory").unwrap();
    let err = Releases::new(&app_dir).remove_leftovers().unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Io { op: "list", path, .. } if *path == app_dir.join("releases")),
        "{err:?}"
    );
    assert!(err.to_string().contains("apps/web/releases"), "{err}");
}
