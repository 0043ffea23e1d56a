//! A full disk on demand: a small tmpfs mounted by the test (root only), and a filler.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs mounted at a path, unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `"256k"`) at `at`, its root directory
    /// with `mode`.
    ///
    /// # Errors
    ///
    /// What `mount` said when it failed (not root, no tmpfs support).
    pub fn mount(at: &Path, size: &str, mode: u32) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode={mode:04o}")])
            .arg("tmpfs")
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Writes to `path` until the filesystem is full (to the last byte).
///
/// # Panics
///
/// When `path` cannot be created.
pub fn fill(path: &Path) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let chunk = vec![b'x'; 4096];
    while f.write_all(&chunk).is_ok() {}
    for _ in 0..4096 {
        if f.write_all(b"x").is_err() {
            break;
        }
    }
    let _ = f.sync_all();
}
