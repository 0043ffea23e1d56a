//! What the job file and the plan file do alike on disk: a read bounded by size before any
//! byte is read, and an atomic, durable write (temp file in the same directory, fsync,
//! rename).

use std::io::Write;
use std::path::Path;

/// Why a bounded read failed.
#[derive(Debug)]
pub enum BoundedRead {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is larger than allowed; its size.
    TooLarge(u64),
}

/// Reads `path` when it is at most `max` bytes.
///
/// # Errors
///
/// [`BoundedRead`].
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, BoundedRead> {
    let size = std::fs::metadata(path).map_err(BoundedRead::Io)?.len();
    if size > max {
        return Err(BoundedRead::TooLarge(size));
    }
    std::fs::read(path).map_err(BoundedRead::Io)
}

/// Writes `bytes` to `path` atomically and durably.
///
/// # Errors
///
/// The I/O error of any step; `path` is then unchanged.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
