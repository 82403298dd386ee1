//! A private PostgreSQL cluster run from the binaries installed on the machine.
//!
//! PostgreSQL refuses to run as root, and must not: started by root, the server runs as an
//! unprivileged host user (`privilege.rs`). The server is a child of a thread that waits on it
//! and gets SIGINT (fast shutdown) if this process dies, so no server outlives its owner.

mod privilege;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use privilege::Privilege;

/// Superuser of the embedded cluster.
const SUPERUSER: &str = "ledger";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked for initdb and postgres via pg_config, PATH and \
         /usr/lib/postgresql/*/bin): install them (Debian/Ubuntu: apt-get install postgresql) or set \
         DATABASE_URL to an existing server"
    )]
    NoBinaries,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> EmbeddedError {
    let what = what.into();
    move |source| EmbeddedError::Io { what, source }
}

/// A running private cluster. Stopped by [`EmbeddedPostgres::stop`] or on drop.
pub struct EmbeddedPostgres {
    root: PathBuf,
    port: u16,
    password: String,
    pid: u32,
    /// `None` when attached to a server another `ledger` process started and owns.
    exited: Option<Mutex<mpsc::Receiver<io::Result<ExitStatus>>>>,
    stopped: bool,
}

impl EmbeddedPostgres {
    /// Starts (creating on first use) a cluster whose files live under `root`, with extra
    /// server settings (`name=value`). Blocks until the server accepts connections.
    pub fn start(root: &Path, settings: &[(&str, &str)]) -> Result<Self, EmbeddedError> {
        let bin = find_binaries()?;
        fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
        let root = root
            .canonicalize()
            .map_err(io_err(format!("resolving {}", root.display())))?;
        let privilege = Privilege::choose(&bin, &root)?;
        let pgdata = root.join("pg");
        let password_file = root.join("pg-password");
        let mode = match privilege {
            Privilege::AsIs => 0o700,
            Privilege::Unprivileged { .. } => privilege::DATA_DIR_MODE,
        };
        fs::set_permissions(&root, fs::Permissions::from_mode(mode))
            .map_err(io_err("restricting the data directory"))?;

        if !pgdata.join("PG_VERSION").exists() {
            init_cluster(&bin, &privilege, &pgdata, &password_file)?;
        }
        let password = read_unfollowed(&password_file)
            .map_err(io_err(format!("reading {}", password_file.display())))?
            .trim()
            .to_owned();
        // Another `ledger` process already serves this directory: share its server. (A server
        // never outlives the process that started it, so a live one has a live owner.)
        if let Some((pid, port)) = running_server(&pgdata) {
            tracing::info!(
                pid,
                port,
                "using the PostgreSQL another ledger process runs on this data directory"
            );
            let mut pg = EmbeddedPostgres {
                root,
                port,
                password,
                pid,
                exited: None,
                stopped: true,
            };
            pg.wait_until_accepting(Duration::from_secs(60))?;
            return Ok(pg);
        }

        // Keep the port of the previous start when it is free, so clients configured with this
        // cluster's URL reconnect after a restart.
        let port_file = root.join("pg-port");
        let previous = fs::read_to_string(&port_file)
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok());
        let port = match previous {
            Some(p) if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() => p,
            _ => free_port()?,
        };
        // Written anew, never through whatever an older version's server user left there.
        let _ = fs::remove_file(&port_file);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&port_file)
            .and_then(|mut f| f.write_all(port.to_string().as_bytes()))
            .map_err(io_err("writing pg-port"))?;
        let log = open_log(&root.join("postgres.log")).map_err(io_err("opening postgres.log"))?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(privilege.seen(&pgdata))
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="]);
        if !settings.iter().any(|(name, _)| *name == "shared_buffers") {
            cmd.arg("-c")
                .arg(format!("shared_buffers={}MB", shared_buffers_mib()));
        }
        for (name, value) in settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("postgres.log"))?)
            .stderr(log);
        let (pid, exited) = spawn_supervised(cmd, privilege)?;
        let mut pg = EmbeddedPostgres {
            root,
            port,
            password,
            pid,
            exited: Some(Mutex::new(exited)),
            stopped: false,
        };
        pg.wait_until_accepting(Duration::from_secs(60))?;
        Ok(pg)
    }

    /// Connection URL for a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the PostgreSQL binaries in use (for tools such as pgbench).
    pub fn bin_dir() -> Result<PathBuf, EmbeddedError> {
        find_binaries()
    }

    /// Whether this process started the server (and so stops it).
    pub fn owns_server(&self) -> bool {
        self.exited.is_some()
    }

    /// Fast shutdown; waits for the server to exit.
    pub fn stop(mut self) -> Result<(), EmbeddedError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), EmbeddedError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let Some(exited) = self.exited.as_mut() else {
            return Ok(());
        };
        let pid =
            libc::pid_t::try_from(self.pid).map_err(|_| EmbeddedError::Failed("bad pid".into()))?;
        // SAFETY: plain syscall on the pid of our own child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let exited = exited.get_mut().unwrap_or_else(|p| p.into_inner());
        match exited.recv_timeout(Duration::from_secs(60)) {
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // SAFETY: as above; immediate shutdown after the fast one hung.
                unsafe { libc::kill(pid, libc::SIGQUIT) };
                let _ = exited.recv_timeout(Duration::from_secs(10));
                Err(EmbeddedError::Failed(
                    "PostgreSQL did not stop within 60 s".into(),
                ))
            }
        }
    }

    fn wait_until_accepting(&mut self, limit: Duration) -> Result<(), EmbeddedError> {
        let deadline = Instant::now() + limit;
        loop {
            let exited = self
                .exited
                .as_mut()
                .and_then(|e| e.get_mut().ok())
                .and_then(|e| e.try_recv().ok());
            if let Some(status) = exited {
                self.stopped = true;
                return Err(EmbeddedError::Failed(format!(
                    "PostgreSQL exited during start-up ({status:?}); see {}/postgres.log:\n{}",
                    self.root.display(),
                    log_tail(&self.root.join("postgres.log"))
                )));
            }
            if server_ready(self.port, &self.password) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(EmbeddedError::Failed(format!(
                    "PostgreSQL did not accept connections within {limit:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("stopping the embedded PostgreSQL: {e}");
        }
    }
}

/// Ready when the startup packet is answered by something other than "starting up": a
/// password request (`R`) means the server accepts connections.
fn server_ready(port: u16, _password: &str) -> bool {
    use std::io::Read;
    use std::net::TcpStream;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut params = Vec::new();
    for (k, v) in [("user", SUPERUSER), ("database", "postgres")] {
        params.extend_from_slice(k.as_bytes());
        params.push(0);
        params.extend_from_slice(v.as_bytes());
        params.push(0);
    }
    params.push(0);
    let len = u32::try_from(8 + params.len()).unwrap_or(0);
    let mut packet = Vec::new();
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    packet.extend_from_slice(&params);
    if stream.write_all(&packet).is_err() {
        return false;
    }
    let mut tag = [0u8; 1];
    matches!(stream.read_exact(&mut tag), Ok(()) if tag[0] == b'R')
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The directory holding `initdb` and `postgres`.
fn find_binaries() -> Result<PathBuf, EmbeddedError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut candidates = Vec::new();
    if let Ok(dir) = std::env::var("LEDGER_PG_BIN") {
        candidates.push(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if let Ok(initdb) = dir.join("initdb").canonicalize() {
                if let Some(parent) = initdb.parent() {
                    candidates.push(parent.to_owned());
                }
            }
        }
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    candidates
        .into_iter()
        .find(|dir| has_both(dir))
        .ok_or(EmbeddedError::NoBinaries)
}

/// Spawns `cmd` from a thread that lives exactly as long as the child and reports its exit.
fn spawn_supervised(
    mut cmd: Command,
    privilege: Privilege,
) -> Result<(u32, mpsc::Receiver<io::Result<ExitStatus>>), EmbeddedError> {
    let (pid_tx, pid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || {
            privilege.prepare(&mut cmd, true);
            match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let _ = exit_tx.send(child.wait());
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            }
        })
        .map_err(io_err("starting the PostgreSQL supervisor thread"))?;
    let pid = pid_rx
        .recv()
        .map_err(|_| EmbeddedError::Failed("PostgreSQL supervisor thread died".into()))?
        .map_err(io_err("starting postgres"))?;
    Ok((pid, exit_rx))
}

/// The server's log, appended to; a link left in its place (by an older version's server
/// user) is replaced by a new file, never written through.
fn open_log(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::MetadataExt;
    let open = || {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Ok(file) if file.metadata()?.is_file() && file.metadata()?.nlink() == 1 => Ok(file),
        Ok(_) | Err(_) => {
            fs::remove_file(path)?;
            open()
        }
    }
}

/// The text of a file in the data directory, without following a link put in its place.
fn read_unfollowed(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?
        .take(4096)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn init_cluster(
    bin: &Path,
    privilege: &Privilege,
    pgdata: &Path,
    password_file: &Path,
) -> Result<(), EmbeddedError> {
    let password = random_password();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        // The directory may be the server's user's: a link put there is not followed.
        .custom_flags(libc::O_NOFOLLOW)
        .open(password_file)
        .map_err(io_err("writing the cluster password"))?;
    file.write_all(password.as_bytes())
        .map_err(io_err("writing the cluster password"))?;
    privilege.hand_over(&file)?;
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.arg("-D")
        .arg(privilege.seen(pgdata))
        .args([
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--auth=scram-sha-256",
        ])
        .arg(format!(
            "--pwfile={}",
            privilege.seen(password_file).display()
        ))
        .stdin(Stdio::null());
    privilege.prepare(&mut cmd, false);
    let out = cmd.output().map_err(io_err("running initdb"))?;
    if !out.status.success() {
        return Err(EmbeddedError::Failed(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn random_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}

/// The pid and port of a live server on `pgdata`, from its `postmaster.pid`.
fn running_server(pgdata: &Path) -> Option<(u32, u16)> {
    let text = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let port: u16 = lines.nth(2)?.trim().parse().ok()?;
    let is_postgres = fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("postgres"));
    is_postgres.then_some((pid, port))
}

fn free_port() -> Result<u16, EmbeddedError> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(io_err("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("finding a free port"))?
        .port())
}

/// PostgreSQL's own advice for a dedicated server: a quarter of the memory for its buffer
/// cache, here between its default (128 MiB, sized for machines of decades ago) and 2 GiB. The
/// read models (about a kilobyte per ticket row) then stay in PostgreSQL's buffers instead of
/// being copied in from the kernel's page cache on every read.
fn shared_buffers_mib() -> u64 {
    let total_kib = fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    });
    total_kib.map_or(128, |kib| (kib / 1024 / 4).clamp(128, 2048))
}
