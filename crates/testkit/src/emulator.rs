//! The iot-emulator binary (DPS + IoT Hub over HTTPS) as a child process: started on a data dir,
//! its JSON ready line read from stdout (`dps_endpoint`, `id_scope`, `ca_pem`, `hubs`, ...).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ChildGuard;

/// Starts `iot-emulator --data-dir <data_dir> <args>`, its log in `log` and its stdout in
/// `<log>.out`; returns it once it printed its ready line. Panics with its log if it exits.
pub fn start(data_dir: &Path, args: &[String], log: &Path) -> (ChildGuard, Value) {
    let out = log.with_extension("out");
    let mut command = Command::new(crate::workspace_bin("iot-emulator"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("EMULATOR_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("emulator stdout file"))
        .stderr(std::fs::File::create(log).expect("emulator log file"));
    let mut child = ChildGuard::spawn(command).expect("spawn iot-emulator");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(Ok(ready)) = read(&out).lines().next().map(serde_json::from_str::<Value>) {
            return (child, ready);
        }
        assert!(child.try_wait().is_none(), "iot-emulator exited:\n{}", read(log));
        assert!(Instant::now() < deadline, "iot-emulator printed no ready line:\n{}", read(log));
        std::thread::sleep(Duration::from_millis(20));
    }
}
