//! Client commands, mirroring `az iot hub`. They talk to a hub over its REST API
//! (never to its files behind its back): the local hub's owner key, CA and port are
//! read from its data directory; `--login` names any other hub. The exception is
//! `policy`: shared access policies are the hub's configuration (`hub.json`, as
//! they are Azure Resource Manager settings for IoT Hub, not registry data), so
//! those verbs edit the data directory, and a running hub applies the change
//! within a second.

mod fleet;

pub(crate) use fleet::{invoke_method, module_identity, module_twin};
pub(crate) use fleet::{InvokeMethodArgs, ModuleIdentityCommand, ModuleTwinCommand};

use crate::config::DataDir;
use crate::Global;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use twinhub_core::identity::generate_key;
use twinhub_core::policy::{Permission, Policy};
use twinhub_core::{connection_string, sas};
use twinhub_sdk::ServiceClient;

/// `connection-string` verbs.
#[derive(Subcommand)]
pub(crate) enum ConnectionStringCommand {
    /// Print a service connection string of the local hub.
    Show {
        /// The shared access policy.
        #[arg(long, default_value = "iothubowner")]
        policy_name: String,
        /// Use the secondary key.
        #[arg(long)]
        key_type: Option<KeyType>,
    },
}

/// Which of two keys.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum KeyType {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

impl KeyType {
    /// This key of a policy.
    fn of_policy(self, policy: &Policy) -> &str {
        match self {
            Self::Primary => &policy.primary_key,
            Self::Secondary => &policy.secondary_key,
        }
    }

    /// This key of a device or module, from its registry JSON.
    fn of_identity<'d>(self, device: &'d Value, device_id: &str) -> Result<&'d str, String> {
        let field = match self {
            Self::Primary => "primaryKey",
            Self::Secondary => "secondaryKey",
        };
        device["authentication"]["symmetricKey"][field]
            .as_str()
            .ok_or_else(|| format!("'{device_id}' has no symmetric key"))
    }
}

/// `policy` verbs (`az iot hub policy`).
#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// List the shared access policies, with their keys.
    List,
    /// Show one policy.
    Show {
        /// The policy name.
        #[arg(long, short = 'n')]
        name: String,
    },
    /// Create a policy with fresh keys.
    Create {
        /// The policy name.
        #[arg(long, short = 'n')]
        name: String,
        /// What it grants.
        #[arg(long, num_args = 1.., required = true)]
        permissions: Vec<Right>,
    },
    /// Delete a policy: tokens signed with its keys are refused from then on.
    Delete {
        /// The policy name.
        #[arg(long, short = 'n')]
        name: String,
    },
    /// Regenerate a key (or swap the two): tokens signed with a replaced key are
    /// refused from then on.
    #[command(name = "renew-key")]
    RenewKey {
        /// The policy name.
        #[arg(long, short = 'n')]
        name: String,
        /// Which key.
        #[arg(long = "renew-key", alias = "rk")]
        which: RenewKey,
    },
}

/// A right a policy grants, as `az iot hub policy create --permissions` spells it.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "PascalCase")]
pub(crate) enum Right {
    /// Read the identity registry.
    RegistryRead,
    /// Write the identity registry.
    RegistryWrite,
    /// Service-side twin and query access.
    ServiceConnect,
    /// Connect as any device.
    DeviceConnect,
}

impl From<Right> for Permission {
    fn from(right: Right) -> Self {
        match right {
            Right::RegistryRead => Permission::RegistryRead,
            Right::RegistryWrite => Permission::RegistryWrite,
            Right::ServiceConnect => Permission::ServiceConnect,
            Right::DeviceConnect => Permission::DeviceConnect,
        }
    }
}

/// Which key `policy renew-key` regenerates.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum RenewKey {
    /// A new primary key.
    Primary,
    /// A new secondary key.
    Secondary,
    /// Exchange the primary and secondary keys.
    Swap,
}

impl RenewKey {
    /// Renews one of the two keys, or swaps them.
    fn apply(self, primary: &mut String, secondary: &mut String) {
        let mut rng = rand::rngs::OsRng;
        match self {
            Self::Primary => *primary = generate_key(&mut rng),
            Self::Secondary => *secondary = generate_key(&mut rng),
            Self::Swap => std::mem::swap(primary, secondary),
        }
    }
}

/// `device-identity` verbs.
#[derive(Subcommand)]
pub(crate) enum DeviceIdentityCommand {
    /// Register a device (keys are generated).
    Create {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long)]
        status: Option<Status>,
    },
    /// Show a device.
    Show {
        #[arg(long, short = 'd')]
        device_id: String,
    },
    /// List devices.
    List {
        #[arg(long)]
        top: Option<usize>,
    },
    /// Update a device.
    Update {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long)]
        status: Option<Status>,
        #[arg(long)]
        status_reason: Option<String>,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Delete a device.
    Delete {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Device connection strings.
    #[command(name = "connection-string")]
    ConnectionString {
        #[command(subcommand)]
        command: DeviceConnectionStringCommand,
    },
    /// Regenerate a device's key (or swap its two keys); its live session is
    /// closed and tokens signed with a replaced key are refused.
    #[command(name = "renew-key")]
    RenewKey {
        #[arg(long, short = 'd')]
        device_id: String,
        /// Which key.
        #[arg(long = "key-type", alias = "kt")]
        which: RenewKey,
        #[arg(long)]
        etag: Option<String>,
    },
}

/// `generate-sas-token` options (`az iot hub generate-sas-token`).
#[derive(Args)]
pub(crate) struct GenerateSasTokenArgs {
    /// A device token, signed with the device's own key; without it, a service
    /// token signed with a shared access policy.
    #[arg(long, short = 'd')]
    device_id: Option<String>,
    /// The policy for a service token (default: iothubowner, or the policy of
    /// --login).
    #[arg(long, short = 'n')]
    policy_name: Option<String>,
    /// Sign with the secondary key.
    #[arg(long)]
    key_type: Option<KeyType>,
    /// Validity in seconds.
    #[arg(long, default_value_t = 3600)]
    du: u32,
}

/// `device-identity connection-string` verbs.
#[derive(Subcommand)]
pub(crate) enum DeviceConnectionStringCommand {
    /// Print a device's connection string.
    Show {
        #[arg(long, short = 'd')]
        device_id: String,
        #[arg(long)]
        key_type: Option<KeyType>,
    },
}

/// Device status.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Status {
    /// May connect.
    Enabled,
    /// Refused.
    Disabled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        }
    }
}

/// `device-twin` verbs.
#[derive(Subcommand)]
pub(crate) enum DeviceTwinCommand {
    /// Show a twin.
    Show {
        #[arg(long, short = 'd')]
        device_id: String,
    },
    /// Merge tags and desired properties into a twin.
    Update {
        #[arg(long, short = 'd')]
        device_id: String,
        /// Desired properties to merge, as JSON (`null` deletes).
        #[arg(long)]
        desired: Option<String>,
        /// Tags to merge, as JSON.
        #[arg(long)]
        tags: Option<String>,
        #[arg(long)]
        etag: Option<String>,
    },
    /// Replace a twin's tags and desired properties.
    Replace {
        #[arg(long, short = 'd')]
        device_id: String,
        /// A whole twin body (`{"tags":..,"properties":{"desired":..}}`).
        #[arg(long)]
        json: Option<String>,
        #[arg(long)]
        desired: Option<String>,
        #[arg(long)]
        tags: Option<String>,
        #[arg(long)]
        etag: Option<String>,
    },
}

/// `query` options.
#[derive(Args)]
pub(crate) struct QueryArgs {
    /// The query, e.g. "SELECT * FROM devices WHERE tags.location = 'US'".
    #[arg(long = "query-command", short = 'q')]
    query: String,
    /// At most this many rows.
    #[arg(long)]
    top: Option<usize>,
}

fn print(value: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn parse_json_arg(flag: &str, text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("--{flag} is not valid JSON: {e}"))
}

/// The service client for the hub the global options name.
fn client(global: &Global) -> Result<ServiceClient, String> {
    let ca_from = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    if let Some(login) = &global.login {
        let ca = global.ca.as_deref().map(ca_from).transpose()?;
        return ServiceClient::from_connection_string(login, ca.as_deref(), global.port)
            .map_err(|e| e.to_string());
    }
    let data = DataDir::new(&global.data_dir);
    let hub = data.read_hub_file()?;
    let cs = owner_connection_string(&hub, OWNER_POLICY, KeyType::Primary)?;
    let ca = match &global.ca {
        Some(p) => ca_from(p)?,
        None => ca_from(&data.ca_pem())?,
    };
    ServiceClient::from_connection_string(
        &cs,
        Some(&ca),
        Some(global.port.unwrap_or(hub.https_port)),
    )
    .map_err(|e| e.to_string())
}

fn owner_connection_string(
    hub: &crate::config::HubFile,
    policy: &str,
    key: KeyType,
) -> Result<String, String> {
    let p = hub.policy(policy)?;
    let host = hub.host_names.first().map_or("localhost", String::as_str);
    Ok(connection_string::service(host, &p.name, key.of_policy(p)))
}

/// `twinhub connection-string show`.
pub(crate) async fn connection_string(
    global: &Global,
    command: ConnectionStringCommand,
) -> Result<(), String> {
    let ConnectionStringCommand::Show {
        policy_name,
        key_type,
    } = command;
    let hub = DataDir::new(&global.data_dir).read_hub_file()?;
    println!(
        "{}",
        owner_connection_string(&hub, &policy_name, key_type.unwrap_or(KeyType::Primary))?
    );
    Ok(())
}

/// A policy as `az iot hub policy show` prints it.
fn policy_json(p: &Policy) -> Value {
    let rights: Vec<String> = p.rights.iter().map(|r| format!("{r:?}")).collect();
    json!({
        "keyName": p.name,
        "primaryKey": p.primary_key,
        "secondaryKey": p.secondary_key,
        "rights": rights.join(", "),
    })
}

/// The policy the CLI itself signs with: it cannot be deleted.
const OWNER_POLICY: &str = "iothubowner";

/// `twinhub policy ...`.
pub(crate) async fn policy(global: &Global, command: PolicyCommand) -> Result<(), String> {
    if global.login.is_some() {
        return Err("policies are the hub's configuration: run `twinhub policy` with the hub's --data-dir, not --login".into());
    }
    let data = DataDir::new(&global.data_dir);
    let mut rng = rand::rngs::OsRng;
    match command {
        PolicyCommand::List => {
            let hub = data.read_hub_file()?;
            print(&Value::Array(
                hub.policies.iter().map(policy_json).collect(),
            ))
        }
        PolicyCommand::Show { name } => {
            let hub = data.read_hub_file()?;
            print(&policy_json(hub.policy(&name)?))
        }
        PolicyCommand::Create { name, permissions } => {
            let hub = data.update_hub_file(|hub| {
                if hub.policies.iter().any(|p| p.name == name) {
                    return Err(format!("a shared access policy '{name}' exists already"));
                }
                let mut rights: Vec<Permission> = Vec::new();
                for p in permissions.iter().map(|&r| Permission::from(r)) {
                    if !rights.contains(&p) {
                        rights.push(p);
                    }
                }
                hub.policies.push(Policy {
                    name: name.clone(),
                    primary_key: generate_key(&mut rng),
                    secondary_key: generate_key(&mut rng),
                    rights,
                });
                Ok(())
            })?;
            print(&policy_json(hub.policy(&name)?))
        }
        PolicyCommand::Delete { name } => {
            if name == OWNER_POLICY {
                return Err(format!("'{OWNER_POLICY}' cannot be deleted: the hub's own commands sign with it (renew its keys instead)"));
            }
            data.update_hub_file(|hub| {
                let i = hub.policy_index(&name)?;
                hub.policies.remove(i);
                Ok(())
            })?;
            Ok(())
        }
        PolicyCommand::RenewKey { name, which } => {
            let hub = data.update_hub_file(|hub| {
                let i = hub.policy_index(&name)?;
                let p = &mut hub.policies[i];
                which.apply(&mut p.primary_key, &mut p.secondary_key);
                Ok(())
            })?;
            print(&policy_json(hub.policy(&name)?))
        }
    }
}

/// `twinhub device-identity ...`.
pub(crate) async fn device_identity(
    global: &Global,
    command: DeviceIdentityCommand,
) -> Result<(), String> {
    let client = client(global)?;
    let err = |e: twinhub_sdk::SdkError| e.to_string();
    match command {
        DeviceIdentityCommand::Create { device_id, status } => {
            let mut body = json!({"deviceId": device_id, "authentication": {"type": "sas", "symmetricKey": {"primaryKey": null, "secondaryKey": null}}});
            if let Some(s) = status {
                body["status"] = json!(s.as_str());
            }
            print(&client.create_device(&device_id, &body).await.map_err(err)?)
        }
        DeviceIdentityCommand::Show { device_id } => {
            print(&client.get_device(&device_id).await.map_err(err)?)
        }
        DeviceIdentityCommand::List { top } => print(&client.list_devices(top).await.map_err(err)?),
        DeviceIdentityCommand::Update {
            device_id,
            status,
            status_reason,
            etag,
        } => {
            let mut body = json!({"deviceId": device_id});
            if let Some(s) = status {
                body["status"] = json!(s.as_str());
            }
            if let Some(r) = status_reason {
                body["statusReason"] = json!(r);
            }
            print(
                &client
                    .update_device(&device_id, &body, etag.as_deref())
                    .await
                    .map_err(err)?,
            )
        }
        DeviceIdentityCommand::Delete { device_id, etag } => client
            .delete_device(&device_id, etag.as_deref())
            .await
            .map_err(err),
        DeviceIdentityCommand::ConnectionString {
            command:
                DeviceConnectionStringCommand::Show {
                    device_id,
                    key_type,
                },
        } => {
            let device = client.get_device(&device_id).await.map_err(err)?;
            let key = key_type
                .unwrap_or(KeyType::Primary)
                .of_identity(&device, &device_id)?;
            let host = client_host(global)?;
            println!("{}", connection_string::device(&host, &device_id, key));
            Ok(())
        }
        DeviceIdentityCommand::RenewKey {
            device_id,
            which,
            etag,
        } => {
            let device = client.get_device(&device_id).await.map_err(err)?;
            let mut primary = KeyType::Primary
                .of_identity(&device, &device_id)?
                .to_owned();
            let mut secondary = KeyType::Secondary
                .of_identity(&device, &device_id)?
                .to_owned();
            which.apply(&mut primary, &mut secondary);
            let mut body = device.clone();
            body["authentication"]["symmetricKey"] =
                json!({"primaryKey": primary, "secondaryKey": secondary});
            // Without --etag, the etag just read: a change in between is refused
            // rather than overwritten.
            let etag = etag.or_else(|| device["etag"].as_str().map(str::to_owned));
            print(
                &client
                    .update_device(&device_id, &body, etag.as_deref())
                    .await
                    .map_err(err)?,
            )
        }
    }
}

/// The host name connection strings should carry.
fn client_host(global: &Global) -> Result<String, String> {
    if let Some(login) = &global.login {
        let cs = connection_string::ConnectionString::parse(login).map_err(|e| e.message)?;
        return cs
            .require("HostName")
            .map(str::to_owned)
            .map_err(|e| e.message);
    }
    let hub = DataDir::new(&global.data_dir).read_hub_file()?;
    Ok(hub
        .host_names
        .first()
        .cloned()
        .unwrap_or_else(|| "localhost".into()))
}

/// `twinhub generate-sas-token`: prints `{"sas": "SharedAccessSignature ..."}`.
pub(crate) async fn generate_sas_token(
    global: &Global,
    args: GenerateSasTokenArgs,
) -> Result<(), String> {
    let host = client_host(global)?;
    let which = args.key_type.unwrap_or(KeyType::Primary);
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        .saturating_add(u64::from(args.du));
    let expiry = i64::try_from(expiry).map_err(|e| e.to_string())?;
    let token = match &args.device_id {
        Some(device_id) => {
            let device = client(global)?
                .get_device(device_id)
                .await
                .map_err(|e| e.to_string())?;
            let key = which.of_identity(&device, device_id)?;
            sas::generate_token(&format!("{host}/devices/{device_id}"), key, None, expiry)
        }
        None => {
            let (name, key) = policy_key(global, args.policy_name.as_deref(), which)?;
            sas::generate_token(&host, &key, Some(&name), expiry)
        }
    }
    .ok_or("the key is not base64")?;
    print(&json!({ "sas": token }))
}

/// The name and key of the policy to sign a service token with.
fn policy_key(
    global: &Global,
    name: Option<&str>,
    which: KeyType,
) -> Result<(String, String), String> {
    if let Some(login) = &global.login {
        let cs = connection_string::ConnectionString::parse(login).map_err(|e| e.message)?;
        let login_policy = cs.require("SharedAccessKeyName").map_err(|e| e.message)?;
        if name.is_some_and(|n| n != login_policy) {
            return Err(format!(
                "--login holds the key of '{login_policy}' only; run this with --data-dir to sign for another policy"
            ));
        }
        let key = cs.require("SharedAccessKey").map_err(|e| e.message)?;
        return Ok((login_policy.to_owned(), key.to_owned()));
    }
    let hub = DataDir::new(&global.data_dir).read_hub_file()?;
    let policy = hub.policy(name.unwrap_or(OWNER_POLICY))?;
    Ok((policy.name.clone(), which.of_policy(policy).to_owned()))
}

/// `twinhub device-twin ...`.
pub(crate) async fn device_twin(global: &Global, command: DeviceTwinCommand) -> Result<(), String> {
    let client = client(global)?;
    let err = |e: twinhub_sdk::SdkError| e.to_string();
    match command {
        DeviceTwinCommand::Show { device_id } => {
            print(&client.get_twin(&device_id).await.map_err(err)?)
        }
        DeviceTwinCommand::Update {
            device_id,
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
                    .update_twin(&device_id, &patch, etag.as_deref())
                    .await
                    .map_err(err)?,
            )
        }
        DeviceTwinCommand::Replace {
            device_id,
            json,
            desired,
            tags,
            etag,
        } => {
            let twin = match json {
                Some(j) => parse_json_arg("json", &j)?,
                None => twin_body(desired, tags)?,
            };
            print(
                &client
                    .replace_twin(&device_id, &twin, etag.as_deref())
                    .await
                    .map_err(err)?,
            )
        }
    }
}

/// A twin body from `--desired` and `--tags` JSON arguments.
fn twin_body(desired: Option<String>, tags: Option<String>) -> Result<Value, String> {
    let mut body = json!({});
    if let Some(d) = desired {
        body["properties"] = json!({"desired": parse_json_arg("desired", &d)?});
    }
    if let Some(t) = tags {
        body["tags"] = parse_json_arg("tags", &t)?;
    }
    Ok(body)
}

/// `twinhub query`.
pub(crate) async fn query(global: &Global, args: QueryArgs) -> Result<(), String> {
    let client = client(global)?;
    let rows = client
        .query_all(&args.query, args.top)
        .await
        .map_err(|e| e.to_string())?;
    print(&Value::Array(rows))
}
