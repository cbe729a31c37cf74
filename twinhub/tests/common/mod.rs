//! A `twinhub serve` process on free loopback ports for integration tests, killed
//! when the test ends however it ends.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use twinhub_sdk::ServiceClient;

/// A running hub.
pub struct Hub {
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
    pub data: PathBuf,
    pub https_port: u16,
    pub mqtts_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Hub {
    /// A fresh hub in a temporary data directory.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut hub = Self::start_in(&data, free_port(), free_port());
        hub._dir = Some(dir);
        hub
    }

    /// A hub on `data` with the given ports (0 picks a free one).
    pub fn start_in(data: &Path, https_port: u16, mqtts_port: u16) -> Self {
        Self::start_with(data, https_port, mqtts_port, &[])
    }

    /// Like [`Hub::start_in`], with extra `twinhub serve` arguments.
    pub fn start_with(data: &Path, https_port: u16, mqtts_port: u16, extra: &[&str]) -> Self {
        let https_port = if https_port == 0 {
            free_port()
        } else {
            https_port
        };
        let mqtts_port = if mqtts_port == 0 {
            free_port()
        } else {
            mqtts_port
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_twinhub"))
            .args(["serve", "--bind", "127.0.0.1"])
            .args([
                "--https-port",
                &https_port.to_string(),
                "--mqtts-port",
                &mqtts_port.to_string(),
            ])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start twinhub");
        // Generous: a loaded 2-core machine can take long to start a process.
        let deadline = Instant::now() + Duration::from_secs(90);
        for port in [https_port, mqtts_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("hub exited before listening on {port}: {status}");
                }
                assert!(Instant::now() < deadline, "hub did not start listening");
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        Self {
            child: Some(child),
            _dir: None,
            data: data.to_path_buf(),
            https_port,
            mqtts_port,
        }
    }

    /// Kills the hub with SIGKILL now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (through `kill`, no libc) and waits up to `within` for the
    /// hub to exit; returns its exit status and how long it took, or `None` if it
    /// was still running (it is then killed).
    pub fn terminate(&mut self, within: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        while started.elapsed() < within {
            if let Some(status) = child.try_wait().unwrap() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The CA clients must trust.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.data.join("ca.pem")).unwrap()
    }

    /// A policy's primary key from `hub.json`.
    pub fn policy_key(&self, policy: &str) -> String {
        let hub: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.data.join("hub.json")).unwrap()).unwrap();
        let p = hub["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == policy)
            .unwrap();
        p["primaryKey"].as_str().unwrap().to_owned()
    }

    /// A REST client with `policy`'s key.
    pub fn service_client(&self, policy: &str) -> ServiceClient {
        let cs = format!(
            "HostName=localhost;SharedAccessKeyName={policy};SharedAccessKey={}",
            self.policy_key(policy)
        );
        ServiceClient::from_connection_string(&cs, Some(&self.ca_pem()), Some(self.https_port))
            .unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}
