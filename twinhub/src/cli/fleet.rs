//! Module identities, module twins and direct methods from the command line, as
//! `az iot hub module-identity`, `az iot hub module-twin` and
//! `az iot hub invoke-device-method` / `invoke-module-method`.

use super::{client, client_host, parse_json_arg, print, twin_body, KeyType};
use crate::Global;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use twinhub_core::method::MethodRequest;
use twinhub_core::{connection_string, Identity};

/// `module-identity` verbs.
#[derive(Subcommand)]
pub(crate) enum ModuleIdentityCommand {
    /// Create a module of a device (keys are generated).
    Create {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long, short = 'm')]
        module_id: String,
    },
    /// Show a module.
    Show {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long, short = 'm')]
        module_id: String,
    },
    /// List a device's modules.
    List {
        #[arg(long, short = 'd')]
        device_id: String,
    },
    /// Update a module from a whole Module JSON (`--set`-style edits are not
    /// supported: pass the JSON that `show` printed, changed).
    Update {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long, short = 'm')]
        module_id: String,
        /// The module JSON.
        #[arg(long)]
        json: String,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Delete a module (its twin goes too, and its session is closed).
    Delete {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long, short = 'm')]
        module_id: String,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Module connection strings.
    #[command(name = "connection-string")]
    ConnectionString {
        #[command(subcommand)]
        command: ModuleConnectionStringCommand,
    },
}

/// `module-identity connection-string` verbs.
#[derive(Subcommand)]
pub(crate) enum ModuleConnectionStringCommand {
    /// Print a module's connection string.
    Show {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long, short = 'm')]
        module_id: String,
        #[arg(long)]
        key_type: Option<KeyType>,
    },
}

/// `module-twin` verbs.
#[derive(Subcommand)]
pub(crate) enum ModuleTwinCommand {
    /// Show a module twin.
    Show {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long, short = 'm')]
        module_id: String,
    },
    /// Merge tags and desired properties into a module twin.
    Update {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long, short = 'm')]
        module_id: String,
        /// Desired properties to merge, as JSON (`null` deletes).
        #[arg(long)]
        desired: Option<String>,
        /// Tags to merge, as JSON.
        #[arg(long)]
        tags: Option<String>,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Replace a module twin's tags and desired properties.
    Replace {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long, short = 'm')]
        module_id: String,
        /// A whole twin body (`{"tags":..,"properties":{"desired":..}}`).
        #[arg(long)]
        json: String,
        #[arg(long)]
        etag: Option<String>,
    },
}

/// `invoke-device-method` options.
#[derive(Args)]
pub(crate) struct InvokeMethodArgs {
    #[arg(long, short = 'd')]
    device_id: String,
    /// Invoke the method on this module of the device.
    #[arg(long, short = 'm')]
    module_id: Option<String>,
    /// The method name.
    #[arg(long = "method-name", alias = "mn")]
    method_name: String,
    /// The payload, as JSON (default `{}`).
    #[arg(long = "method-payload", alias = "mp", default_value = "{}")]
    method_payload: String,
    /// Seconds to wait for the device's answer (5 to 300).
    #[arg(long = "timeout", alias = "to", default_value_t = 30)]
    timeout: u32,
    /// Seconds to wait for the device to come online (0 to 300).
    #[arg(long = "connect-timeout", alias = "ct", default_value_t = 0)]
    connect_timeout: u32,
}

fn module_identity_json(device_id: &str, module_id: &str) -> Value {
    json!({"deviceId": device_id, "moduleId": module_id,
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": null, "secondaryKey": null}}})
}

/// `twinhub module-identity ...`.
pub(crate) async fn module_identity(
    global: &Global,
    command: ModuleIdentityCommand,
) -> Result<(), String> {
    let client = client(global)?;
    let err = |e: twinhub_sdk::SdkError| e.to_string();
    match command {
        ModuleIdentityCommand::Create {
            device_id,
            module_id,
        } => {
            let body = module_identity_json(&device_id, &module_id);
            print(
                &client
                    .create_module(&device_id, &module_id, &body)
                    .await
                    .map_err(err)?,
            )
        }
        ModuleIdentityCommand::Show {
            device_id,
            module_id,
        } => print(
            &client
                .get_module(&device_id, &module_id)
                .await
                .map_err(err)?,
        ),
        ModuleIdentityCommand::List { device_id } => {
            print(&client.list_modules(&device_id).await.map_err(err)?)
        }
        ModuleIdentityCommand::Update {
            device_id,
            module_id,
            json,
            etag,
        } => {
            let body = parse_json_arg("json", &json)?;
            print(
                &client
                    .update_module(&device_id, &module_id, &body, etag.as_deref())
                    .await
                    .map_err(err)?,
            )
        }
        ModuleIdentityCommand::Delete {
            device_id,
            module_id,
            etag,
        } => client
            .delete_module(&device_id, &module_id, etag.as_deref())
            .await
            .map_err(err),
        ModuleIdentityCommand::ConnectionString {
            command:
                ModuleConnectionStringCommand::Show {
                    device_id,
                    module_id,
                    key_type,
                },
        } => {
            let module = client
                .get_module(&device_id, &module_id)
                .await
                .map_err(err)?;
            let key = key_type
                .unwrap_or(KeyType::Primary)
                .of_identity(&module, &module_id)?;
            let host = client_host(global)?;
            println!(
                "{}",
                connection_string::module(&host, &device_id, &module_id, key)
            );
            Ok(())
        }
    }
}

/// `twinhub module-twin ...`.
pub(crate) async fn module_twin(global: &Global, command: ModuleTwinCommand) -> Result<(), String> {
    let client = client(global)?;
    let err = |e: twinhub_sdk::SdkError| e.to_string();
    match command {
        ModuleTwinCommand::Show {
            device_id,
            module_id,
        } => print(
            &client
                .get_twin_of(&Identity::module(device_id, module_id))
                .await
                .map_err(err)?,
        ),
        ModuleTwinCommand::Update {
            device_id,
            module_id,
            desired,
            tags,
            etag,
        } => {
            if desired.is_none() && tags.is_none() {
                return Err("give --desired and/or --tags".into());
            }
            let patch = twin_body(desired, tags)?;
            print(
                &client
                    .update_twin_of(
                        &Identity::module(device_id, module_id),
                        &patch,
                        etag.as_deref(),
                    )
                    .await
                    .map_err(err)?,
            )
        }
        ModuleTwinCommand::Replace {
            device_id,
            module_id,
            json,
            etag,
        } => {
            let twin = parse_json_arg("json", &json)?;
            print(
                &client
                    .replace_twin_of(
                        &Identity::module(device_id, module_id),
                        &twin,
                        etag.as_deref(),
                    )
                    .await
                    .map_err(err)?,
            )
        }
    }
}

/// `twinhub invoke-device-method`: prints the device's `{"status", "payload"}`.
pub(crate) async fn invoke_method(global: &Global, args: InvokeMethodArgs) -> Result<(), String> {
    let client = client(global)?;
    let target = match args.module_id {
        Some(m) => Identity::module(args.device_id, m),
        None => Identity::device(args.device_id),
    };
    let body = json!({
        "methodName": args.method_name,
        "payload": parse_json_arg("method-payload", &args.method_payload)?,
        "responseTimeoutInSeconds": args.timeout,
        "connectTimeoutInSeconds": args.connect_timeout,
    });
    // The hub's own checks, before anything is sent.
    let request = MethodRequest::from_json(&body).map_err(|e| e.message)?;
    let answer = client
        .invoke_method(&target, &request)
        .await
        .map_err(|e| e.to_string())?;
    print(&answer.to_json())
}
