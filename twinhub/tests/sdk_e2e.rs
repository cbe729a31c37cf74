//! End-to-end tests that drive a real `twinhub serve` with the official Azure
//! IoT service SDKs: Node `azure-iothub` (scripts in `tests/sdk/node`) and
//! Python `azure-iot-hub` (scripts in `tests/sdk/python`).
//!
//! All tests of this binary share ONE hub on the default ports 443/8883: the
//! Node service SDK can only talk to port 443 (spec §1), so two hubs could not
//! run side by side anyway. The hub is started lazily by the first test, and
//! the tests take turns through a global mutex, so each script sees a quiet
//! hub (the scripts compare registry statistics before and after).
//!
//! The hub runs under a tiny `sh` wrapper that kills it as soon as the pipe
//! to its standard input closes, which happens when this test process exits
//! for any reason. A `static` is never dropped, so without the wrapper a hub
//! would outlive the test run and keep port 443 bound.
//!
//! The SDK packages are not vendored: `scripts/test.sh` installs them (`npm
//! ci` in `tests/sdk/node`, `pip install -r tests/sdk/python/requirements.txt`).
//! When they are missing the tests fail and say so; they never pass silently.

use std::fs::{self, File};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

const HTTPS_PORT: u16 = 443;
const MQTTS_PORT: u16 = 8883;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The scripts time themselves out earlier (60 s Node, 90 s Python); this is
/// the backstop for an interpreter that hangs before its own timer starts.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);

/// The shared access policies a fresh hub creates, with the environment
/// variable that hands each connection string to the scripts.
const POLICIES: [(&str, &str); 5] = [
    ("iothubowner", "IOTHUB_CONNECTION_STRING"),
    ("service", "IOTHUB_SERVICE_CONNECTION_STRING"),
    ("device", "IOTHUB_DEVICE_POLICY_CONNECTION_STRING"),
    ("registryRead", "IOTHUB_REGISTRY_READ_CONNECTION_STRING"),
    (
        "registryReadWrite",
        "IOTHUB_REGISTRY_READ_WRITE_CONNECTION_STRING",
    ),
];

/// Kills the hub (`$@`) when standard input reaches end-of-file; exits with
/// the hub's status when the hub exits by itself, stopping the watcher first
/// so that it can never signal a recycled pid. The hub gets /dev/null as
/// stdin so that only the watcher reads the pipe.
const WRAPPER: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
hub=$!
{ read -r _line <&3; kill -9 "$hub" 2>/dev/null; } </dev/null &
watcher=$!
wait "$hub"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

#[test]
fn node_registry() {
    run_script(Lang::Node, "registry");
}

#[test]
fn node_twin() {
    run_script(Lang::Node, "twin");
}

#[test]
fn node_auth() {
    run_script(Lang::Node, "auth");
}

#[test]
fn node_query() {
    run_script(Lang::Node, "query");
}

#[test]
fn python_query() {
    run_script(Lang::Python, "query");
}

/// `device.js` / `device.py`: the device endpoint through the official device
/// SDKs with a traced wire (twin GET shape, reported and desired patches,
/// presence, a server-side kick survived without re-subscribing, refusals).
#[test]
fn node_device_mqtt() {
    run_script_with(Lang::Node, "device", &[("DEVICE_TRANSPORT", "mqtt")]);
}

#[test]
fn node_device_websockets() {
    run_script_with(Lang::Node, "device", &[("DEVICE_TRANSPORT", "ws")]);
}

#[test]
fn python_device_mqtt() {
    run_script_with(Lang::Python, "device", &[("DEVICE_TRANSPORT", "mqtt")]);
}

#[test]
fn python_device_websockets() {
    run_script_with(Lang::Python, "device", &[("DEVICE_TRANSPORT", "ws")]);
}

/// `methods.js` / `methods.py`: direct methods from the service SDK to a
/// device SDK's method handler, and every error path of a call.
#[test]
fn node_methods_mqtt() {
    run_script_with(Lang::Node, "methods", &[("DEVICE_TRANSPORT", "mqtt")]);
}

#[test]
fn node_methods_websockets() {
    run_script_with(Lang::Node, "methods", &[("DEVICE_TRANSPORT", "ws")]);
}

#[test]
fn python_methods_mqtt() {
    run_script_with(Lang::Python, "methods", &[("DEVICE_TRANSPORT", "mqtt")]);
}

#[test]
fn python_methods_websockets() {
    run_script_with(Lang::Python, "methods", &[("DEVICE_TRANSPORT", "ws")]);
}

/// `modules.js` / `modules.py`: module identities from the registry SDKs, module
/// twins and methods through the device SDKs' module clients.
#[test]
fn node_modules_mqtt() {
    run_script_with(Lang::Node, "modules", &[("DEVICE_TRANSPORT", "mqtt")]);
}

#[test]
fn node_modules_websockets() {
    run_script_with(Lang::Node, "modules", &[("DEVICE_TRANSPORT", "ws")]);
}

#[test]
fn python_modules_mqtt() {
    run_script_with(Lang::Python, "modules", &[("DEVICE_TRANSPORT", "mqtt")]);
}

#[test]
fn python_modules_websockets() {
    run_script_with(Lang::Python, "modules", &[("DEVICE_TRANSPORT", "ws")]);
}

#[test]
fn python_registry() {
    run_script(Lang::Python, "registry");
}

#[test]
fn python_twin() {
    run_script(Lang::Python, "twin");
}

#[test]
fn python_auth() {
    run_script(Lang::Python, "auth");
}

/// `twinhub connection-string show` prints exactly one service connection
/// string per policy, and defaults to `iothubowner`.
#[test]
fn cli_prints_service_connection_strings() {
    let guard = hub();
    let hub = guard.get();
    for (policy, var) in POLICIES {
        let cs = hub.env_value(var);
        let (host, rest) = cs
            .strip_prefix("HostName=")
            .and_then(|s| s.split_once(';'))
            .unwrap_or_else(|| panic!("{policy}: bad connection string {cs:?}"));
        assert_eq!(host, "localhost", "{policy}: HostName in {cs:?}");
        let key = rest
            .strip_prefix(&format!("SharedAccessKeyName={policy};SharedAccessKey="))
            .unwrap_or_else(|| panic!("{policy}: bad connection string {cs:?}"));
        assert!(
            is_base64_of_32_bytes(key),
            "{policy}: key {key:?} must be base64 of 32 bytes"
        );
    }
    let default = twinhub_stdout(&[
        "connection-string",
        "show",
        "--data-dir",
        &hub.data_dir_str(),
    ]);
    assert_eq!(
        default.trim_end(),
        hub.env_value("IOTHUB_CONNECTION_STRING"),
        "default policy is iothubowner"
    );
    let keys: Vec<&str> = POLICIES
        .iter()
        .map(|(_, var)| {
            hub.env_value(var)
                .rsplit_once("SharedAccessKey=")
                .map_or("", |(_, k)| k)
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        assert!(
            !keys[..i].contains(key),
            "every policy must have its own key: {keys:?}"
        );
    }
}

#[derive(Clone, Copy)]
enum Lang {
    Node,
    Python,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run_script(lang: Lang, name: &str) {
    run_script_with(lang, name, &[]);
}

/// Like [`run_script`], with extra environment variables (which also go into the
/// device-id prefix, so variants of one script never share devices).
fn run_script_with(lang: Lang, name: &str, extra_env: &[(&str, &str)]) {
    let guard = hub();
    let hub = guard.get();
    let root = repo_root();
    let (program, script, ca_var, lang_name) = match lang {
        Lang::Node => {
            check_node_packages(&root);
            (
                "node",
                format!("tests/sdk/node/{name}.js"),
                "NODE_EXTRA_CA_CERTS",
                "node",
            )
        }
        Lang::Python => {
            check_python_packages();
            (
                "python3",
                format!("tests/sdk/python/{name}.py"),
                "REQUESTS_CA_BUNDLE",
                "python",
            )
        }
    };
    let variant: String = extra_env.iter().map(|(_, v)| format!("-{v}")).collect();
    let out_path = hub
        .work_dir
        .join(format!("{lang_name}-{name}{variant}.stdout"));
    let err_path = hub
        .work_dir
        .join(format!("{lang_name}-{name}{variant}.stderr"));
    let mut cmd = Command::new(program);
    cmd.arg(&script)
        .current_dir(&root)
        .envs(hub.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra_env.iter().copied())
        .env(
            "TEST_PREFIX",
            format!(
                "{lang_name}-{name}-{}",
                extra_env
                    .iter()
                    .map(|(_, v)| format!("{v}-"))
                    .collect::<String>()
            ),
        )
        .env(ca_var, hub.data_dir.join("ca.pem"))
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(create_file(&out_path))
        .stderr(create_file(&err_path));
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start `{program} {script}` ({e}); is {program} installed? Run scripts/test.sh"
        )
    });
    let status = wait_with_timeout(&mut child, SCRIPT_TIMEOUT);
    let stdout = read_lossy(&out_path);
    let stderr = read_lossy(&err_path);
    println!(
        "===== {program} {script} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    println!("----- stdout\n{stdout}");
    println!("----- stderr\n{stderr}");
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "`{program} {script}` failed ({status}):\n{}\n----- hub log (tail)\n{}",
            last_lines(&format!("{stdout}\n{stderr}"), 40),
            hub.log_tail(60)
        ),
        None => panic!(
            "`{program} {script}` did not finish within {SCRIPT_TIMEOUT:?}; killed\n----- hub log (tail)\n{}",
            hub.log_tail(60)
        ),
    }
    hub.assert_alive();
}

fn check_node_packages(root: &Path) {
    let modules = root.join("tests/sdk/node/node_modules");
    for package in ["azure-iothub", "azure-iot-device", "azure-iot-device-mqtt"] {
        let manifest = modules.join(package).join("package.json");
        assert!(
            manifest.is_file(),
            "Node SDK package {package} is not installed ({} missing): run scripts/test.sh \
             (it runs `npm ci` in tests/sdk/node)",
            manifest.display()
        );
    }
}

fn check_python_packages() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import azure.iot.hub, azure.iot.device, six"])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = result {
        panic!(
            "the Python SDK packages are not importable: run scripts/test.sh \
             (it runs `pip install -r tests/sdk/python/requirements.txt`)\n{e}"
        );
    }
}

/// The hub shared by every test of this binary, or why it could not start.
type HubSlot = Option<Result<Hub, String>>;

fn hub_slot() -> &'static Mutex<HubSlot> {
    static HUB: OnceLock<Mutex<HubSlot>> = OnceLock::new();
    HUB.get_or_init(|| Mutex::new(None))
}

/// Exclusive access to the shared hub, started on first use. A test that
/// panicked while holding the lock leaves the hub usable, so the poison flag
/// is ignored.
struct HubGuard(MutexGuard<'static, HubSlot>);

impl HubGuard {
    fn get(&self) -> &Hub {
        match self.0.as_ref() {
            Some(Ok(hub)) => hub,
            Some(Err(e)) => panic!("the shared twinhub could not be started:\n{e}"),
            None => unreachable!("hub() always fills the slot"),
        }
    }
}

fn hub() -> HubGuard {
    let mut slot = hub_slot().lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
        *slot = Some(Hub::start());
    }
    let guard = HubGuard(slot);
    guard.get().assert_alive();
    guard
}

struct Hub {
    wrapper: Mutex<Child>,
    /// Closing this pipe makes the wrapper kill the hub. Kept for the life of
    /// the process; the OS closes it when the test process exits.
    _stdin: ChildStdin,
    work_dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
}

impl Hub {
    fn start() -> Result<Hub, String> {
        if port_open(HTTPS_PORT) {
            return Err(format!(
                "something already listens on 127.0.0.1:{HTTPS_PORT} (a leftover twinhub?); \
                 these tests need the port for their own hub"
            ));
        }
        let work_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk_e2e");
        if work_dir.exists() {
            fs::remove_dir_all(&work_dir)
                .map_err(|e| format!("cannot clean {}: {e}", work_dir.display()))?;
        }
        fs::create_dir_all(&work_dir)
            .map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
        let data_dir = work_dir.join("data");
        let log_path = work_dir.join("hub.log");
        let log = File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("twinhub-wrapper")
            .arg(env!("CARGO_BIN_EXE_twinhub"))
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args([
                "--https-port",
                &HTTPS_PORT.to_string(),
                "--mqtts-port",
                &MQTTS_PORT.to_string(),
            ])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start the twinhub wrapper: {e}"))?;
        let stdin = wrapper.stdin.take().ok_or("wrapper has no stdin pipe")?;
        let mut hub = Hub {
            wrapper: Mutex::new(wrapper),
            _stdin: stdin,
            work_dir,
            data_dir,
            log_path,
            env: Vec::new(),
        };
        hub.wait_ready()?;
        for (policy, var) in POLICIES {
            let cs = twinhub_output(&[
                "connection-string",
                "show",
                "--data-dir",
                &hub.data_dir_str(),
                "--policy-name",
                policy,
            ])?;
            let cs = cs.trim_end();
            if cs.lines().count() != 1 || !cs.starts_with("HostName=") {
                return Err(format!(
                    "`twinhub connection-string show --policy-name {policy}` must print only the connection string, got {cs:?}"
                ));
            }
            hub.env.push((var.to_owned(), cs.to_owned()));
        }
        println!(
            "twinhub serve started; data dir {}, log {}",
            hub.data_dir.display(),
            hub.log_path.display()
        );
        Ok(hub)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(format!(
                    "`twinhub serve` exited early ({status}); its log:\n{}",
                    self.log_tail(200)
                ));
            }
            if port_open(HTTPS_PORT) && self.data_dir.join("ca.pem").is_file() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "`twinhub serve` did not accept connections on 127.0.0.1:{HTTPS_PORT} within {READY_TIMEOUT:?} \
                     (or wrote no {}); its log:\n{}",
                    self.data_dir.join("ca.pem").display(),
                    self.log_tail(200)
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        let mut wrapper = self.wrapper.lock().unwrap_or_else(PoisonError::into_inner);
        wrapper.try_wait().ok().flatten()
    }

    fn assert_alive(&self) {
        if let Some(status) = self.exit_status() {
            panic!(
                "`twinhub serve` has exited ({status}); its log:\n{}",
                self.log_tail(200)
            );
        }
    }

    fn data_dir_str(&self) -> String {
        self.data_dir.to_string_lossy().into_owned()
    }

    fn env_value(&self, var: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {var}"))
    }

    fn log_tail(&self, lines: usize) -> String {
        last_lines(&read_lossy(&self.log_path), lines)
    }
}

fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn twinhub_output(args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_twinhub"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run twinhub {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`twinhub {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout)
        .map_err(|e| format!("`twinhub {}` printed non-UTF-8: {e}", args.join(" ")))
}

fn twinhub_stdout(args: &[&str]) -> String {
    twinhub_output(args).unwrap_or_else(|e| panic!("{e}"))
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn create_file(path: &Path) -> File {
    File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn is_base64_of_32_bytes(s: &str) -> bool {
    s.len() == 44
        && s.ends_with('=')
        && !s[..43].contains('=')
        && s[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}
