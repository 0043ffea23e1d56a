//! Property tests of the unpacker: nothing panics, nothing lands outside the release.

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
