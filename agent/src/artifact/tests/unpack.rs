//! The unpacker, one test per attack: each asserts the exact refusal and that nothing was
//! unpacked.

use super::*;

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
