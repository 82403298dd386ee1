//! Who the embedded PostgreSQL runs as. Never as root on the host: as the superuser of the
//! database it could otherwise read any file (`pg_read_file`) or run any program (`COPY … TO
//! PROGRAM`) with root's rights. Started by root, the server runs as an unprivileged host user
//! (`postgres`, else a `ledger-postgres` system user created as PostgreSQL's packages do, else
//! `nobody`), owning the data directory. That directory may sit under one only root may enter
//! (`/root/…`), so the server gets a mount namespace of its own in which the directory is
//! bind-mounted at a path anyone may traverse (`/tmp/ledger-pg-…`); its files are reached
//! only there, and only by it.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{io_err, EmbeddedError};

/// How the server processes run, decided once per start.
#[derive(Clone, Debug)]
pub(super) enum Privilege {
    /// Not root: run as ourselves.
    AsIs,
    /// Root: switch to this unprivileged user; with `view`, in a mount namespace where the
    /// data directory (`root`) is mounted at `view`.
    Unprivileged {
        uid: u32,
        gid: u32,
        root: PathBuf,
        view: Option<PathBuf>,
    },
}

impl Privilege {
    /// The way to run the server for the data directory `root` (canonical).
    pub(super) fn choose(bin: &Path, root: &Path) -> Result<Privilege, EmbeddedError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Privilege::AsIs);
        }
        let (uid, gid) = server_user()?;
        // The data directory stays root's, and only the cluster in it is the server's: the
        // files root writes there (the port, the log, the password) cannot be swapped for
        // links by the server's user, who may only pass through it to the cluster.
        take_back(root)?;
        // The cluster is handed over once (a new one, or one an older version ran as root),
        // and the hand-over is marked in the root-owned directory: later starts walk nothing
        // the server's user could have arranged meanwhile. Delete the mark to hand `pg/` over
        // again (after restoring its files as root, say).
        let handed = root.join(HANDED_OVER);
        if !handed.exists() {
            let pgdata = root.join("pg");
            match fs::create_dir(&pgdata) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(format!("creating {}", pgdata.display()))(e)),
            }
            give(&pgdata, uid, gid)?;
            fs::write(&handed, format!("{uid}:{gid}\n"))
                .map_err(io_err(format!("writing {}", handed.display())))?;
        }
        let view = view_of(root)?;
        let mounted = Privilege::Unprivileged {
            uid,
            gid,
            root: root.to_owned(),
            view: Some(view),
        };
        // Mount namespaces can be refused (a container without CAP_SYS_ADMIN): the directory's
        // own path must then be open to the server's user.
        let mut probe = Command::new(bin.join("postgres"));
        probe
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        mounted.prepare(&mut probe, false);
        if probe.status().is_ok_and(|s| s.success()) {
            return Ok(mounted);
        }
        tracing::warn!(
            "mount namespaces unavailable: PostgreSQL runs as uid {uid} on {} directly",
            root.display()
        );
        Ok(Privilege::Unprivileged {
            uid,
            gid,
            root: root.to_owned(),
            view: None,
        })
    }

    /// `path` (under the data directory) as the server sees it.
    pub(super) fn seen(&self, path: &Path) -> PathBuf {
        match self {
            Privilege::Unprivileged {
                root,
                view: Some(view),
                ..
            } => path
                .strip_prefix(root)
                .map_or_else(|_| path.to_owned(), |rest| view.join(rest)),
            _ => path.to_owned(),
        }
    }

    /// Gives a file the server must read or write to its user.
    pub(super) fn hand_over(&self, file: &fs::File) -> Result<(), EmbeddedError> {
        if let Privilege::Unprivileged { uid, gid, .. } = self {
            std::os::unix::fs::fchown(file, Some(*uid), Some(*gid))
                .map_err(io_err("giving a file to the server's user"))?;
        }
        Ok(())
    }

    /// Arranges for `cmd` to run as decided, in its own process group, and (when `tie` is set)
    /// to receive SIGINT when the thread that spawns it ends.
    pub(super) fn prepare(&self, cmd: &mut Command, tie: bool) {
        cmd.process_group(0);
        // Prepared before fork: the child must not allocate.
        let (switch, mount) = match self {
            Privilege::AsIs => (None, None),
            Privilege::Unprivileged {
                uid,
                gid,
                root,
                view,
            } => {
                let mount = view.as_ref().and_then(|view| {
                    Some((
                        CString::new(root.as_os_str().as_bytes()).ok()?,
                        CString::new(view.as_os_str().as_bytes()).ok()?,
                    ))
                });
                // The server's working directory must be one its user may enter.
                cmd.current_dir("/");
                (Some((*uid, *gid)), mount)
            }
        };
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure only makes async-signal-safe syscalls on memory prepared above.
        unsafe {
            cmd.pre_exec(move || {
                if let Some((source, target)) = &mount {
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // Our mounts stay ours: none propagates back to the host's namespace.
                    let root = c"/";
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some((uid, gid)) = switch {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                if tie {
                    // Set after the credential change, which would clear it.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                }
                Ok(())
            });
        }
    }
}

/// The unprivileged user the server runs as: `postgres`, else `ledger-postgres` (created
/// when missing, as PostgreSQL's packages create theirs), else `nobody`.
fn server_user() -> Result<(u32, u32), EmbeddedError> {
    if let Some(user) = lookup_user("postgres").or_else(|| lookup_user("ledger-postgres")) {
        return Ok(user);
    }
    let created = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "ledger-postgres",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if created.is_ok_and(|s| s.success()) {
        if let Some(user) = lookup_user("ledger-postgres") {
            tracing::info!("created the system user ledger-postgres to run PostgreSQL");
            return Ok(user);
        }
    }
    lookup_user("nobody").ok_or_else(|| {
        EmbeddedError::Failed(
            "running as root, but there is no unprivileged user to run PostgreSQL as \
             (postgres, ledger-postgres or nobody) and none could be created"
                .into(),
        )
    })
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null result of getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

/// Makes the data directory root's again (a version before this one gave it to the server's
/// user), passable but not writable by others. Its own path is trusted: its parent is not the
/// server's.
fn take_back(root: &Path) -> Result<(), EmbeddedError> {
    std::os::unix::fs::lchown(root, Some(0), Some(0))
        .and_then(|()| fs::set_permissions(root, fs::Permissions::from_mode(DATA_DIR_MODE)))
        .map_err(io_err(format!("taking back {}", root.display())))
}

/// The mark, in the data directory, that `pg/` was handed to the server's user.
const HANDED_OVER: &str = "pg-handed-over";

/// The data directory's mode when the server runs as another user: it passes through to the
/// cluster, and can neither list nor change the directory.
pub(super) const DATA_DIR_MODE: u32 = 0o711;

/// Gives the cluster directory and everything in it to the server's user (a cluster made by an
/// older version may belong to root). The server's user owns the directory already when this
/// runs as root again, and could swap any entry for a link meanwhile: each entry is opened
/// relative to its parent's descriptor and without following links, and changed through the
/// descriptor; links, sockets and files with other names elsewhere (hard links) are left as
/// they are.
fn give(root: &Path, uid: u32, gid: u32) -> Result<(), EmbeddedError> {
    use rustix::fs::{fchown, fstat, openat, Dir, FileType, Gid, Mode, OFlags, Uid, CWD};
    use rustix::io::Errno;
    const DEPTH: usize = 32;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let (owner, group) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let own = |fd: &rustix::fd::OwnedFd, stat: &rustix::fs::Stat| {
        if stat.st_uid != uid || stat.st_gid != gid {
            fchown(fd, Some(owner), Some(group))?;
        }
        Ok::<(), io::Error>(())
    };
    let walk = |dir: rustix::fd::OwnedFd| -> io::Result<()> {
        let mut stack = vec![(dir, 0)];
        while let Some((dir, depth)) = stack.pop() {
            own(&dir, &fstat(&dir)?)?;
            let mut entries = Dir::read_from(&dir)?;
            while let Some(entry) = entries.read() {
                let entry = entry?;
                let name = entry.file_name();
                if name == c"." || name == c".." {
                    continue;
                }
                // Never blocks on a FIFO, never opens a terminal; a link or a socket fails.
                let how = flags | OFlags::NONBLOCK | OFlags::NOCTTY;
                let fd = match openat(&dir, name, how, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::LOOP | Errno::NXIO) => continue,
                    Err(e) => return Err(e.into()),
                };
                let stat = fstat(&fd)?;
                match FileType::from_raw_mode(stat.st_mode) {
                    FileType::Directory if depth < DEPTH => stack.push((fd, depth + 1)),
                    FileType::Directory => {
                        return Err(io::Error::other("directories nested too deep"));
                    }
                    FileType::RegularFile if stat.st_nlink == 1 => own(&fd, &stat)?,
                    _ => {}
                }
            }
        }
        Ok(())
    };
    let how = flags | OFlags::DIRECTORY;
    openat(CWD, root, how, Mode::empty())
        .map_err(io::Error::from)
        .and_then(walk)
        .map_err(io_err(format!(
            "giving {} to the server's user",
            root.display()
        )))
}

/// An empty directory anyone may traverse, where the server's namespace mounts `root`.
fn view_of(root: &Path) -> Result<PathBuf, EmbeddedError> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    root.hash(&mut hasher);
    let view = Path::new("/tmp").join(format!("ledger-pg-{:016x}", hasher.finish()));
    fs::create_dir_all(&view).map_err(io_err(format!("creating {}", view.display())))?;
    // Not a link or a directory someone else made in /tmp: only then is it ours to open.
    let meta =
        fs::symlink_metadata(&view).map_err(io_err(format!("reading {}", view.display())))?;
    if !meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != 0 {
        return Err(EmbeddedError::Failed(format!(
            "{} is not a directory of root's: remove it",
            view.display()
        )));
    }
    fs::set_permissions(&view, fs::Permissions::from_mode(0o755))
        .map_err(io_err(format!("opening {}", view.display())))?;
    Ok(view)
}
