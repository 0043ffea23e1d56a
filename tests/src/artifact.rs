//! Release tarballs: the sample app as a deployable `.tar.gz`, and hostile variants.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::Compression;
use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use crate::bins;
use crate::env::TestEnv;

/// Writes `<root>/artifacts/web-<version>[-<mode>].tar.gz` holding `bin/gantry-sample-app`, a
/// `VERSION` file (so each version has its own digest) and, unless `mode` is empty, a
/// `sample-mode` file that makes the app misbehave (see the sample app's docs).
///
/// # Errors
///
/// When the sample app is not built or the file cannot be written.
pub fn make_artifact(env: &TestEnv, version: &str, mode: &str) -> anyhow::Result<PathBuf> {
    let name = if mode.is_empty() {
        format!("web-{version}.tar.gz")
    } else {
        format!("web-{version}-{}.tar.gz", mode.replace(['=', '/'], "_"))
    };
    let mut files = vec![
        (
            "bin/gantry-sample-app".to_owned(),
            fs::read(bins::path(bins::SAMPLE_APP)?)?,
            0o755,
        ),
        (
            "VERSION".to_owned(),
            format!("{version}\n").into_bytes(),
            0o644,
        ),
    ];
    if !mode.is_empty() {
        files.push((
            "sample-mode".to_owned(),
            format!("{mode}\n").into_bytes(),
            0o644,
        ));
    }
    write_tar_gz(&artifacts_dir(env)?.join(name), |b| {
        for (path, data, mode) in &files {
            let mut h = Header::new_gnu();
            h.set_entry_type(EntryType::Regular);
            h.set_size(u64::try_from(data.len())?);
            h.set_mode(*mode);
            h.set_mtime(0);
            b.append_data(&mut h, path, data.as_slice())?;
        }
        Ok(())
    })
}

/// Writes `<root>/artifacts/web-<version>-large.tar.gz`: the release of [`make_artifact`] plus
/// `padding.bin`, `padding` bytes that do not compress (so the archive is at least that big),
/// for tests of large and interrupted uploads.
///
/// # Errors
///
/// When the sample app is not built or the file cannot be written.
pub fn make_large_artifact(
    env: &TestEnv,
    version: &str,
    padding: usize,
) -> anyhow::Result<PathBuf> {
    let app = fs::read(bins::path(bins::SAMPLE_APP)?)?;
    // xorshift64: cheap bytes gzip cannot shrink.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = Vec::with_capacity(padding + 8);
    while noise.len() < padding {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    noise.truncate(padding);
    let files = [
        ("bin/gantry-sample-app", app, 0o755),
        ("VERSION", format!("{version}\n").into_bytes(), 0o644),
        ("padding.bin", noise, 0o644),
    ];
    let name = format!("web-{version}-large.tar.gz");
    write_tar_gz(&artifacts_dir(env)?.join(name), |b| {
        for (path, data, mode) in &files {
            let mut h = Header::new_gnu();
            h.set_entry_type(EntryType::Regular);
            h.set_size(u64::try_from(data.len())?);
            h.set_mode(*mode);
            h.set_mtime(0);
            b.append_data(&mut h, path, data.as_slice())?;
        }
        Ok(())
    })
}

/// A hostile archive: otherwise a working release, plus one entry that must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// An entry named `../evil`.
    Traversal,
    /// An entry with an absolute path into `<root>/outside/`.
    AbsolutePath,
    /// A symlink `escape -> <root>/outside` followed by the file `escape/evil`.
    SymlinkEscape,
}

/// Writes a hostile release archive; the directory it aims at is [`outside_dir`].
///
/// # Errors
///
/// When it cannot be written.
pub fn make_hostile_artifact(env: &TestEnv, kind: Hostile) -> anyhow::Result<PathBuf> {
    let outside = outside_dir(env);
    fs::create_dir_all(&outside)?;
    let app = fs::read(bins::path(bins::SAMPLE_APP)?)?;
    let name = format!("web-hostile-{kind:?}.tar.gz").to_lowercase();
    write_tar_gz(&artifacts_dir(env)?.join(name), |b| {
        let evil = b"evil\n".as_slice();
        match kind {
            Hostile::Traversal => raw_entry(b, EntryType::Regular, b"../evil", b"", evil)?,
            Hostile::AbsolutePath => {
                let p = outside.join("evil");
                raw_entry(
                    b,
                    EntryType::Regular,
                    p.as_os_str().as_encoded_bytes(),
                    b"",
                    evil,
                )?;
            }
            Hostile::SymlinkEscape => {
                let target = outside.as_os_str().as_encoded_bytes();
                raw_entry(b, EntryType::Symlink, b"escape", target, b"")?;
                raw_entry(b, EntryType::Regular, b"escape/evil", b"", evil)?;
            }
        }
        raw_entry(b, EntryType::Regular, b"bin/gantry-sample-app", b"", &app)?;
        Ok(())
    })
}

/// `<root>/outside`: where a hostile archive tries to write; must stay free of `evil`.
pub fn outside_dir(env: &TestEnv) -> PathBuf {
    env.root.join("outside")
}

fn artifacts_dir(env: &TestEnv) -> anyhow::Result<PathBuf> {
    let dir = env.root.join("artifacts");
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Appends an entry whose name and link name are written byte for byte into the header, so
/// that the `tar` crate's own path checks cannot clean up the attack.
fn raw_entry(
    b: &mut tar::Builder<GzEncoder<File>>,
    kind: EntryType,
    name: &[u8],
    link: &[u8],
    data: &[u8],
) -> anyhow::Result<()> {
    let mut h = Header::new_gnu();
    {
        let gnu = h.as_gnu_mut().context("gnu header")?;
        anyhow::ensure!(
            name.len() < gnu.name.len() && link.len() < gnu.linkname.len(),
            "name too long"
        );
        gnu.name[..name.len()].copy_from_slice(name);
        gnu.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(u64::try_from(data.len())?);
    h.set_mode(if kind == EntryType::Symlink {
        0o777
    } else {
        0o755
    });
    h.set_mtime(0);
    h.set_cksum();
    b.append(&h, data)?;
    Ok(())
}

fn write_tar_gz(
    path: &Path,
    fill: impl FnOnce(&mut tar::Builder<GzEncoder<File>>) -> anyhow::Result<()>,
) -> anyhow::Result<PathBuf> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut b = tar::Builder::new(GzEncoder::new(file, Compression::fast()));
    fill(&mut b)?;
    let mut gz = b.into_inner()?;
    gz.flush()?;
    gz.finish()?.sync_all()?;
    Ok(path.to_owned())
}
