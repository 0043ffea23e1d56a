//! Letting one other user write a directory the agent owns, without CAP_CHOWN.
//!
//! The front door runs as the app's user and rewrites its stats file in `traffic/run/`. A root
//! agent hands that directory to the user with chown(2); an agent running as its own user with
//! only CAP_SETUID, CAP_SETGID and CAP_KILL (the systemd unit) cannot, so it keeps the
//! directory and adds a POSIX ACL entry `user:<uid>:rwx` instead, which an owner may always
//! set. Only that uid gains anything: the group and others keep `r-x`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `ACL_USER_OBJ`, `ACL_USER`, `ACL_GROUP_OBJ`, `ACL_MASK`, `ACL_OTHER` of `<linux/posix_acl.h>`.
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// The id of entries that name no user or group.
const UNDEFINED_ID: u32 = u32::MAX;
/// `POSIX_ACL_XATTR_VERSION`.
const VERSION: u32 = 2;

/// The `system.posix_acl_access` value for `rwx` to the owner and to `uid`, `r-x` to the group
/// and others: the version, then (tag, perm, id) entries in tag order, all little-endian.
fn acl_value(uid: u32) -> Vec<u8> {
    let entries = [
        (USER_OBJ, 7, UNDEFINED_ID),
        (USER, 7, uid),
        (GROUP_OBJ, 5, UNDEFINED_ID),
        (MASK, 7, UNDEFINED_ID),
        (OTHER, 5, UNDEFINED_ID),
    ];
    let mut value = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        value.extend_from_slice(&u16::to_le_bytes(tag));
        value.extend_from_slice(&u16::to_le_bytes(perm));
        value.extend_from_slice(&u32::to_le_bytes(id));
    }
    value
}

/// Gives `uid` write access to the directory `dir` (opened without following a link) with an
/// ACL entry; the directory's owner stays the agent.
///
/// # Errors
///
/// When `dir` cannot be opened as a directory, or the filesystem refuses ACLs (`EOPNOTSUPP`:
/// the data dir must then be on a filesystem with POSIX ACLs, or the agent must run as root).
#[allow(unsafe_code)]
pub(crate) fn grant_write(dir: &Path, uid: u32) -> io::Result<()> {
    let file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)?;
    let value = acl_value(uid);
    let name = c"system.posix_acl_access";
    // SAFETY: fsetxattr reads the NUL-terminated name and `value.len()` bytes of `value`, both
    // alive for the whole call, on a descriptor we own; it keeps no pointer afterwards.
    let rc = unsafe {
        nix::libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_acl_names_the_owner_the_user_the_group_the_mask_and_others_in_tag_order() {
        let v = acl_value(65534);
        assert_eq!(v.len(), 4 + 5 * 8);
        assert_eq!(&v[..4], &[2, 0, 0, 0]);
        // The ACL_USER entry: tag 2, rwx, uid 65534.
        assert_eq!(&v[12..20], &[2, 0, 7, 0, 0xfe, 0xff, 0, 0]);
        let tags: Vec<u16> = v[4..]
            .chunks(8)
            .map(|e| u16::from_le_bytes([e[0], e[1]]))
            .collect();
        assert_eq!(tags, [USER_OBJ, USER, GROUP_OBJ, MASK, OTHER]);
    }

    #[test]
    fn a_granted_directory_shows_the_mask_in_its_group_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        match grant_write(&run, 65534) {
            Ok(()) => {
                let mode = std::fs::metadata(&run).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o775);
            }
            // A filesystem without ACLs (some tmpfs builds): nothing to check here.
            Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {}
            Err(e) => panic!("{e}"),
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&run, &link).unwrap();
        assert!(grant_write(&link, 65534).is_err(), "a link is not followed");
    }
}
