//! `twinhub`: the hub (`twinhub serve`) and a command line whose verbs mirror
//! `az iot hub` and talk to a hub over its REST API.
//!
//! # Layout
//! - `main.rs`: the command-line grammar and dispatch.
//! - [`config`]: the data directory and `hub.json`.
//! - [`tls`]: the local CA and server certificates.
//! - [`serve`]: starting the listeners and shutting down gracefully.
//! - [`device_backend`]: the MQTT endpoint's adapter onto the service layer.
//! - [`cli`]: the client commands.

mod cli;
mod config;
mod device_backend;
mod serve;
mod tls;

use clap::{Args, Parser, Subcommand};

/// jemalloc rather than the system allocator: see docs/benchmarks.md ("Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "twinhub",
    version,
    about = "A self-hosted device twin hub, wire-compatible with Azure IoT Hub"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args, Clone)]
pub(crate) struct Global {
    /// The hub's data directory (a local hub's keys, CA and database).
    #[arg(long, global = true, env = "TWINHUB_DATA_DIR", default_value = config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Talk to any hub with this service connection string instead of the local one.
    #[arg(long, global = true, env = "TWINHUB_LOGIN")]
    login: Option<String>,
    /// CA certificate (PEM) to trust with --login.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// HTTPS port of the hub with --login (default 443).
    #[arg(long, global = true)]
    port: Option<u16>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve(serve::ServeArgs),
    /// Service connection strings.
    #[command(name = "connection-string")]
    ConnectionString {
        #[command(subcommand)]
        command: cli::ConnectionStringCommand,
    },
    /// The identity registry.
    #[command(name = "device-identity")]
    DeviceIdentity {
        #[command(subcommand)]
        command: cli::DeviceIdentityCommand,
    },
    /// Device twins.
    #[command(name = "device-twin")]
    DeviceTwin {
        #[command(subcommand)]
        command: cli::DeviceTwinCommand,
    },
    /// Module identities.
    #[command(name = "module-identity")]
    ModuleIdentity {
        #[command(subcommand)]
        command: cli::ModuleIdentityCommand,
    },
    /// Module twins.
    #[command(name = "module-twin")]
    ModuleTwin {
        #[command(subcommand)]
        command: cli::ModuleTwinCommand,
    },
    /// Invoke a direct method on a device (or, with --module-id, a module) and
    /// print its answer.
    #[command(name = "invoke-device-method", alias = "invoke-module-method")]
    InvokeDeviceMethod(cli::InvokeMethodArgs),
    /// Run a twin query and print every row as a JSON array.
    Query(cli::QueryArgs),
    /// Print a SAS token for a device or a shared access policy.
    #[command(name = "generate-sas-token")]
    GenerateSasToken(cli::GenerateSasTokenArgs),
    /// Shared access policies (edits the data directory's hub.json; a running
    /// hub applies changes within a second).
    Policy {
        #[command(subcommand)]
        command: cli::PolicyCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("twinhub: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(&cli.global, args).await,
            Command::ConnectionString { command } => {
                cli::connection_string(&cli.global, command).await
            }
            Command::DeviceIdentity { command } => cli::device_identity(&cli.global, command).await,
            Command::DeviceTwin { command } => cli::device_twin(&cli.global, command).await,
            Command::ModuleIdentity { command } => cli::module_identity(&cli.global, command).await,
            Command::ModuleTwin { command } => cli::module_twin(&cli.global, command).await,
            Command::InvokeDeviceMethod(args) => cli::invoke_method(&cli.global, args).await,
            Command::Query(args) => cli::query(&cli.global, args).await,
            Command::GenerateSasToken(args) => cli::generate_sas_token(&cli.global, args).await,
            Command::Policy { command } => cli::policy(&cli.global, command).await,
        }
    });
    // Blocking work still running (a long query) must not hold the exit past
    // the graceful shutdown's budget.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("twinhub: {message}");
            ExitCode::FAILURE
        }
    }
}
