//! Starting an instance: environment, working directory, log file, session and identity.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Uid};

use super::{InstanceSpec, Role, RunAs, SupervisorError, access};

/// `PATH` of every instance.
pub const INSTANCE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A started process: our child, its pid and its start time.
pub(super) struct Spawned {
    pub(super) child: tokio::process::Child,
    pub(super) pid: u32,
    pub(super) start_time: u64,
}

/// The program to execute for `argv0`: a path with a `/` that is not absolute is relative to
/// the release directory; a bare name is the file of that name in the release directory if
/// there is one, else it is searched in the instance's `PATH`.
pub fn resolve_program(release_dir: &Path, argv0: &str) -> PathBuf {
    let path = Path::new(argv0);
    if path.is_absolute() {
        return path.to_owned();
    }
    let in_release = release_dir.join(path);
    if argv0.contains('/') || in_release.is_file() {
        return in_release;
    }
    INSTANCE_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(argv0))
        .find(|p| p.is_file())
        .unwrap_or_else(|| path.to_owned())
}

/// The home directory of `uid` from the user database; `/` when it has no entry.
fn home_of(uid: u32) -> String {
    match nix::unistd::User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.dir.to_string_lossy().into_owned(),
        _ => "/".to_owned(),
    }
}

/// The exact environment of an instance: `PATH`, `HOME`, the job's env, then `PORT` and
/// `GANTRY_*` (later entries win).
pub fn instance_env(spec: &InstanceSpec) -> BTreeMap<String, String> {
    let uid = match &spec.run_as {
        RunAs::User { uid, .. } | RunAs::CurrentUser { uid, .. } => *uid,
    };
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), INSTANCE_PATH.to_owned());
    env.insert("HOME".to_owned(), home_of(uid));
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("PORT".to_owned(), spec.port.to_string());
    env.insert("GANTRY_APP".to_owned(), spec.app.to_string());
    env.insert("GANTRY_VERSION".to_owned(), spec.version.to_string());
    env.insert("GANTRY_INSTANCE".to_owned(), spec.index.to_string());
    env
}

/// The log file of an instance: `<log_dir>/<version>-<index>.log`.
pub fn log_path(spec: &InstanceSpec) -> PathBuf {
    spec.log_dir
        .join(format!("{}-{}.log", spec.version, spec.index))
}

/// Creates the log directory (0750) and opens the instance's log file for appending (0640).
fn open_log(spec: &InstanceSpec) -> Result<File, SupervisorError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&spec.log_dir)
        .map_err(|source| SupervisorError::LogDir {
            path: spec.log_dir.clone(),
            source,
        })?;
    let path = log_path(spec);
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| SupervisorError::LogFile { path, source })
}

/// Identity the child switches to before exec; prepared (allocated) before the fork.
struct Identity {
    user: Option<(Vec<Gid>, Gid, Uid)>,
}

impl Identity {
    fn of(run_as: &RunAs) -> Self {
        match run_as {
            RunAs::User {
                uid, gid, groups, ..
            } => Self {
                user: Some((
                    groups.iter().map(|g| Gid::from_raw(*g)).collect(),
                    Gid::from_raw(*gid),
                    Uid::from_raw(*uid),
                )),
            },
            RunAs::CurrentUser { .. } => Self { user: None },
        }
    }

    /// Runs in the forked child: own session, then groups, gid, uid (in that order, every
    /// failure fatal), then no capabilities in any set, then no new privileges, then inherited descriptors close-on-exec. Only
    /// async-signal-safe system calls, no allocation.
    fn apply(&self) -> io::Result<()> {
        nix::unistd::setsid()?;
        if let Some((groups, gid, uid)) = &self.user {
            nix::unistd::setgroups(groups)?;
            nix::unistd::setgid(*gid)?;
            nix::unistd::setuid(*uid)?;
        }
        clear_ambient_capabilities()?;
        drop_all_capabilities()?;
        nix::sys::prctl::set_no_new_privs()?;
        mark_inherited_fds_cloexec();
        reset_signals();
        Ok(())
    }
}

/// Gives every standard signal (1 to 31) its default action and unblocks all signals, as
/// systemd does for a service: an agent started with SIGHUP or SIGINT ignored (`nohup`, `cmd &` in a script)
/// must not pass that on to its instances. Handlers are reset by `exec` anyway; ignored
/// signals and the mask would not be. Runs in the forked child.
#[allow(unsafe_code)]
fn reset_signals() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: sigaction is async-signal-safe; setting SIG_DFL installs no handler, so
        // no Rust code can run in signal context. A signal the kernel refuses (EINVAL) keeps
        // its action, which exec resets unless it was ignored.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &default) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Empties the ambient capability set. An agent run as a non-root user with ambient
/// capabilities (the systemd unit) would otherwise hand CAP_SETUID and friends to every
/// instance across the uid switch. Runs in the forked child; prctl(2) is async-signal-safe.
#[allow(unsafe_code)]
fn clear_ambient_capabilities() -> io::Result<()> {
    // SAFETY: prctl with PR_CAP_AMBIENT/PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments
    // only, touches no memory of ours, and is async-signal-safe.
    let rc = unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL as nix::libc::c_ulong,
            0 as nix::libc::c_ulong,
            0 as nix::libc::c_ulong,
            0 as nix::libc::c_ulong,
        )
    };
    // EINVAL: a kernel without ambient capabilities (before 4.3) has none to clear.
    if rc == 0 || io::Error::last_os_error().raw_os_error() == Some(nix::libc::EINVAL) {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `struct __user_cap_header_struct` of `<linux/capability.h>`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: nix::libc::c_int,
}

/// `struct __user_cap_data_struct`: one 32-bit word of each set.
#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, as two [`CapData`] words.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Empties the effective, permitted and inheritable sets. After the uid switch the agent's
/// CAP_SETUID and friends are no longer needed, and exec alone would keep the inheritable set
/// (the unit's `AmbientCapabilities=` puts them there), which a program with file capabilities
/// could pick up. Runs in the forked child.
fn drop_all_capabilities() -> io::Result<()> {
    set_capabilities(0, 0, 0)
}

/// Sets this thread's capability sets, a bit per capability; capset(2) is a plain system call
/// on stack memory, async-signal-safe.
#[allow(unsafe_code)]
pub(super) fn set_capabilities(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // Version 3 splits each 64-bit set into a low and a high 32-bit word.
    let word = |set: u64, high: bool| (if high { set >> 32 } else { set }) as u32;
    let data = [false, true].map(|high| CapData {
        effective: word(effective, high),
        permitted: word(permitted, high),
        inheritable: word(inheritable, high),
    });
    // SAFETY: capset reads one header and two data words, both live on this stack frame for
    // the whole call; pid 0 means this thread. It allocates nothing and takes no locks.
    let rc = unsafe { nix::libc::syscall(nix::libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Marks every descriptor above stderr close-on-exec, so descriptors the agent inherited
/// without `O_CLOEXEC` (a launcher's pipe, say) do not leak into instances. Runs in the forked
/// child: `close_range(2)`, or `fcntl(2)` on the first 1024 descriptors on kernels before 5.11.
#[allow(unsafe_code)]
fn mark_inherited_fds_cloexec() {
    use nix::libc;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on this process's own
    // descriptors; it takes no pointers and is async-signal-safe.
    let done = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
    };
    if !done {
        for fd in 3..1024 {
            // SAFETY: F_SETFD on a descriptor number only sets its flag (EBADF when it is not
            // open, which is fine); async-signal-safe, no memory is touched.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
}

/// Builds the command of an instance (or an exec probe) run as `run_as` in `dir`.
pub(crate) fn command(
    dir: &Path,
    argv: &[String],
    env: &BTreeMap<String, String>,
    run_as: &RunAs,
) -> Option<Command> {
    let (argv0, args) = argv.split_first()?;
    let mut cmd = Command::new(resolve_program(dir, argv0));
    cmd.arg0(argv0)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(dir)
        .stdin(Stdio::null());
    set_identity(&mut cmd, run_as);
    Some(cmd)
}

#[allow(unsafe_code)]
fn set_identity(cmd: &mut Command, run_as: &RunAs) {
    let identity = Identity::of(run_as);
    // SAFETY: the closure runs in the child between fork and exec. It only makes the
    // async-signal-safe system calls setsid, setgroups, setgid, setuid, prctl, capset, close_range
    // (or fcntl), sigaction and sigprocmask through wrappers that do not allocate (the group list was allocated before
    // the fork), and it touches no locks or shared state of the parent.
    unsafe {
        cmd.pre_exec(move || identity.apply());
    }
}

/// Sets `limits` in the child, after the identity switch (registered after it, so it runs after
/// it) and before exec.
#[allow(unsafe_code)]
fn set_limits(cmd: &mut Command, limits: super::limits::Prepared) {
    // SAFETY: the closure runs in the child between fork and exec; it only calls setrlimit,
    // async-signal-safe, on values worked out before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || limits.apply());
    }
}

/// Starts the process of `spec`: a new session and process group, as its user, in the release
/// directory, with exactly [`instance_env`], stdin from /dev/null and stdout/stderr appended to
/// [`log_path`]. Nothing ties it to the agent: it outlives the agent.
pub(super) fn spawn(spec: &InstanceSpec) -> Result<Spawned, SupervisorError> {
    let log = open_log(spec)?;
    let stderr = log.try_clone().map_err(|source| SupervisorError::LogFile {
        path: log_path(spec),
        source,
    })?;
    let mut cmd = command(
        &spec.release_dir,
        &spec.command,
        &instance_env(spec),
        &spec.run_as,
    )
    .ok_or_else(|| SupervisorError::EmptyCommand {
        app: spec.app.to_string(),
        index: spec.index,
    })?;
    cmd.stdout(Stdio::from(log)).stderr(Stdio::from(stderr));
    if spec.role == Role::Instance
        && let Some(limits) = &spec.limits
    {
        set_limits(&mut cmd, super::limits::Prepared::of(limits));
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    let spawn_err = |cause: io::Error| {
        let program = resolve_program(
            &spec.release_dir,
            spec.command.first().map_or("", String::as_str),
        );
        // EACCES from exec or chdir: name the directory or file that keeps the user out.
        let blocked = (cause.kind() == io::ErrorKind::PermissionDenied)
            .then(|| access::Identity::of(&spec.run_as))
            .flatten()
            .and_then(|who| access::check_executable(&who, &program).err())
            .map(Box::new);
        SupervisorError::Spawn {
            app: spec.app.to_string(),
            index: spec.index,
            program,
            release_dir: spec.release_dir.clone(),
            cause,
            blocked,
        }
    };
    if !spec.release_dir.is_dir() {
        return Err(spawn_err(io::Error::new(
            io::ErrorKind::NotFound,
            "release directory does not exist",
        )));
    }
    let child = cmd.spawn().map_err(spawn_err)?;
    let pid = child
        .id()
        .ok_or_else(|| spawn_err(io::Error::other("exited at once")))?;
    // Our child is not reaped until we wait for it, so its /proc entry exists.
    let start_time = super::adopt::read_stat(pid)?
        .map(|s| s.start_time)
        .ok_or_else(|| spawn_err(io::Error::other("no /proc entry after spawn")))?;
    Ok(Spawned {
        child,
        pid,
        start_time,
    })
}
