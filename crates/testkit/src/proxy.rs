//! A real HTTP proxy (Debian's tinyproxy) on loopback for one test: its own config, port and
//! log in a temp dir, in the foreground as our child, killed on drop. It tunnels HTTPS with
//! CONNECT, as the proxies gateways sit behind do, and can demand a user name and password.

use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::ChildGuard;

pub struct Tinyproxy {
    dir: tempfile::TempDir,
    port: u16,
    credentials: Option<(String, String)>,
    _child: ChildGuard,
}

impl Tinyproxy {
    /// A proxy that tunnels to any port for anyone.
    pub fn start() -> Self {
        Self::spawn(None)
    }

    /// A proxy that answers 407 unless the client sends `user:password` (Basic).
    pub fn with_credentials(user: &str, password: &str) -> Self {
        Self::spawn(Some((user.to_owned(), password.to_owned())))
    }

    fn spawn(credentials: Option<(String, String)>) -> Self {
        let binary = which("tinyproxy").expect("tinyproxy is not installed; run scripts/setup.sh");
        let dir = tempfile::Builder::new().prefix("tinyproxy-").tempdir().expect("temp dir");
        let mut last_error = String::new();
        for _ in 0..20 {
            let port = crate::free_port();
            let auth = credentials
                .as_ref()
                .map(|(u, p)| format!("BasicAuth {u} {p}\n"))
                .unwrap_or_default();
            // No ConnectPort line: CONNECT to any port (the emulator's is not 443).
            let config = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nLogLevel Info\n\
                 LogFile \"{log}\"\nAllow 127.0.0.1\n{auth}",
                log = dir.path().join("tinyproxy.log").display()
            );
            let conf = dir.path().join("tinyproxy.conf");
            std::fs::write(&conf, config).expect("write tinyproxy.conf");
            let mut command = Command::new(&binary);
            command.arg("-d").arg("-c").arg(&conf).stdin(Stdio::null()).stdout(Stdio::null()).stderr(
                std::fs::File::create(dir.path().join("stderr.log")).map(Stdio::from).unwrap_or(Stdio::null()),
            );
            let mut child = ChildGuard::spawn(command).expect("spawn tinyproxy");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                    return Self { dir, port, credentials, _child: child };
                }
                if child.try_wait().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_error = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
            child.kill();
        }
        panic!("could not start tinyproxy: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, with the proxy's credentials when it has any.
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}", self.port),
            None => self.url_without_credentials(),
        }
    }

    pub fn url_without_credentials(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// How many CONNECT tunnels to `host:port` the proxy opened (from its log).
    pub fn tunnels_to(&self, host_port: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("CONNECT") && l.contains(host_port))
            .count()
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
