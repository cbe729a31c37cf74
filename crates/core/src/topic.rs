//! IoT Hub's MQTT topic grammar and CONNECT username (spec §2.2, §2.7).
//!
//! Parsers borrow from their input and never allocate except to percent-decode
//! username values; builders return owned strings. The hub parses device→hub
//! topics, subscription filters and usernames, and builds hub→device topics; the
//! SDK does the opposite, so both directions live here and round-trip.
//!
//! Matching is case-sensitive on the uppercase forms every SDK sends (`GET`,
//! `PATCH`, `$rid`), like edgeHub's. The `/` before `?` is accepted but not
//! required on device→hub topics, and always written on hub→device topics, whose
//! SDK parsers need it (Python takes `topic.split("/")[3]` as the status code).
//!
//! Request ids (`$rid`) are opaque: parsers return them exactly as they appear and
//! builders write them back unchanged, so a hub echoes what a device sent.

use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// Why a topic, filter or username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not a topic IoT Hub knows.
    #[error("unknown topic")]
    Unknown,
    /// A twin or method topic without a `$rid` property (or with an empty one).
    #[error("missing $rid")]
    MissingRequestId,
    /// A `$version` property that is not an integer.
    #[error("$version is not an integer")]
    BadVersion,
    /// A status segment that is not an integer.
    #[error("status is not an integer")]
    BadStatus,
    /// A device or module id segment is empty.
    #[error("empty device or module id")]
    EmptyId,
}

/// Why a CONNECT username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Not `{host}/{deviceId}[/{moduleId}]/[?]{properties}`.
    #[error("username is not host/deviceId[/moduleId]/?properties")]
    Shape,
    /// The host or device id is empty (or a module id is).
    #[error("username has an empty host, device id or module id")]
    EmptyField,
    /// No non-blank `api-version` property.
    #[error("username has no api-version")]
    MissingApiVersion,
}

const TWIN_GET: &str = "$iothub/twin/GET";
const TWIN_REPORTED: &str = "$iothub/twin/PATCH/properties/reported";
const TWIN_RES: &str = "$iothub/twin/res/";
const TWIN_DESIRED: &str = "$iothub/twin/PATCH/properties/desired";
const METHODS_POST: &str = "$iothub/methods/POST/";
/// The prefix of a device's direct method answers.
pub const METHODS_RES: &str = "$iothub/methods/res/";

/// A topic a device publishes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceTopic<'a> {
    /// `$iothub/twin/GET/?$rid={rid}`: read the twin.
    TwinGet {
        /// Request id, echoed in the response.
        rid: &'a str,
    },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={rid}[&$version={n}]`.
    ReportedPatch {
        /// Request id, echoed in the response.
        rid: &'a str,
        /// Apply only if the reported `$version` is this (Java SDK v2).
        version: Option<i64>,
    },
    /// `devices/{id}[/modules/{mid}]/messages/events/{properties}`: telemetry.
    Telemetry {
        /// The device named in the topic.
        device_id: &'a str,
        /// The module named in the topic, if any.
        module_id: Option<&'a str>,
        /// The URL-encoded property bag, possibly empty, as sent.
        properties: &'a str,
    },
    /// `$iothub/methods/res/{status}/?$rid={rid}`: a direct method's result.
    MethodResponse {
        /// The status the device's handler returned.
        status: i32,
        /// The request id the hub gave the method request.
        rid: &'a str,
    },
}

/// A topic the hub publishes to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubTopic<'a> {
    /// `$iothub/twin/res/{status}/?$rid={rid}[&$version={n}]`.
    TwinResponse {
        /// HTTP-like status: 200 for GET, 204 for PATCH, 4xx/5xx for errors.
        status: u16,
        /// The request id the device sent.
        rid: &'a str,
        /// The new reported `$version`, for a successful PATCH.
        version: Option<i64>,
    },
    /// `$iothub/twin/PATCH/properties/desired/?$version={n}`.
    DesiredPatch {
        /// The new desired `$version`.
        version: i64,
    },
    /// `$iothub/methods/POST/{name}/?$rid={rid}`.
    MethodRequest {
        /// The method name.
        name: &'a str,
        /// The hub's request id.
        rid: &'a str,
    },
    /// `devices/{id}/messages/devicebound/{properties}` (trailing `/` even when empty).
    CloudToDevice {
        /// The target device.
        device_id: &'a str,
        /// The URL-encoded property bag, as sent.
        properties: &'a str,
    },
    /// `devices/{id}/modules/{mid}/inputs/{input}/{properties}`.
    ModuleInput {
        /// The target device.
        device_id: &'a str,
        /// The target module.
        module_id: &'a str,
        /// The input name.
        input: &'a str,
        /// The URL-encoded property bag, as sent.
        properties: &'a str,
    },
}

/// A subscription filter the hub supports (the SDKs use exactly these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter<'a> {
    /// `$iothub/twin/res/#`.
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`.
    DesiredPatches,
    /// `$iothub/methods/POST/#`.
    MethodRequests,
    /// `devices/{id}/messages/devicebound/#`.
    CloudToDevice {
        /// The device named in the filter.
        device_id: &'a str,
    },
    /// `devices/{id}/modules/{mid}/inputs/#`.
    ModuleInputs {
        /// The device named in the filter.
        device_id: &'a str,
        /// The module named in the filter.
        module_id: &'a str,
    },
}

/// The properties after `?`: `&`-separated, each split at its first `=`; a bare
/// key has an empty value.
fn properties(bag: &str) -> impl Iterator<Item = (&str, &str)> {
    bag.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The first value of `key` in a property bag.
fn property<'a>(bag: &'a str, key: &str) -> Option<&'a str> {
    properties(bag).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// After a fixed path: `/?bag` or `?bag` gives `bag`.
fn bag_after(rest: &str) -> Option<&str> {
    rest.strip_prefix("/?").or_else(|| rest.strip_prefix('?'))
}

fn rid_in(bag: &str) -> Result<&str, TopicError> {
    property(bag, "$rid")
        .filter(|r| !r.is_empty())
        .ok_or(TopicError::MissingRequestId)
}

fn version_in(bag: &str) -> Result<Option<i64>, TopicError> {
    property(bag, "$version")
        .map(|v| v.parse::<i64>().map_err(|_| TopicError::BadVersion))
        .transpose()
}

/// One non-empty id segment at the start of `s`, and what follows its `/`.
fn id_segment(s: &str) -> Result<(&str, &str), TopicError> {
    let (id, rest) = s.split_once('/').ok_or(TopicError::Unknown)?;
    if id.is_empty() {
        return Err(TopicError::EmptyId);
    }
    Ok((id, rest))
}

/// `devices/{id}[/modules/{mid}]/` prefix: the ids and the rest.
fn device_prefix(topic: &str) -> Result<(&str, Option<&str>, &str), TopicError> {
    let rest = topic.strip_prefix("devices/").ok_or(TopicError::Unknown)?;
    let (device_id, rest) = id_segment(rest)?;
    match rest.strip_prefix("modules/") {
        Some(rest) => {
            let (module_id, rest) = id_segment(rest)?;
            Ok((device_id, Some(module_id), rest))
        }
        None => Ok((device_id, None, rest)),
    }
}

impl<'a> DeviceTopic<'a> {
    /// Parses a device→hub PUBLISH topic.
    pub fn parse(topic: &'a str) -> Result<Self, TopicError> {
        if let Some(rest) = topic.strip_prefix(TWIN_GET) {
            let bag = bag_after(rest).ok_or(TopicError::Unknown)?;
            return Ok(Self::TwinGet { rid: rid_in(bag)? });
        }
        if let Some(rest) = topic.strip_prefix(TWIN_REPORTED) {
            let bag = bag_after(rest).ok_or(TopicError::Unknown)?;
            return Ok(Self::ReportedPatch {
                rid: rid_in(bag)?,
                version: version_in(bag)?,
            });
        }
        if let Some(rest) = topic.strip_prefix(METHODS_RES) {
            let (status, rest) = rest.split_once('?').ok_or(TopicError::Unknown)?;
            let status = status.strip_suffix('/').unwrap_or(status);
            let status = status.parse::<i32>().map_err(|_| TopicError::BadStatus)?;
            return Ok(Self::MethodResponse {
                status,
                rid: rid_in(rest)?,
            });
        }
        if topic.starts_with("devices/") {
            let (device_id, module_id, rest) = device_prefix(topic)?;
            let rest = rest
                .strip_prefix("messages/events")
                .ok_or(TopicError::Unknown)?;
            let properties = match rest {
                "" => "",
                _ => rest.strip_prefix('/').ok_or(TopicError::Unknown)?,
            };
            return Ok(Self::Telemetry {
                device_id,
                module_id,
                properties,
            });
        }
        Err(TopicError::Unknown)
    }

    /// The topic string, as the SDKs write it.
    pub fn to_topic(&self) -> String {
        match *self {
            Self::TwinGet { rid } => format!("{TWIN_GET}/?$rid={rid}"),
            Self::ReportedPatch { rid, version } => match version {
                Some(v) => format!("{TWIN_REPORTED}/?$rid={rid}&$version={v}"),
                None => format!("{TWIN_REPORTED}/?$rid={rid}"),
            },
            Self::Telemetry {
                device_id,
                module_id,
                properties,
            } => match module_id {
                Some(m) => format!("devices/{device_id}/modules/{m}/messages/events/{properties}"),
                None => format!("devices/{device_id}/messages/events/{properties}"),
            },
            Self::MethodResponse { status, rid } => format!("{METHODS_RES}{status}/?$rid={rid}"),
        }
    }
}

impl<'a> HubTopic<'a> {
    /// Parses a hub→device PUBLISH topic (what an SDK receives).
    pub fn parse(topic: &'a str) -> Result<Self, TopicError> {
        if let Some(rest) = topic.strip_prefix(TWIN_RES) {
            let (status, bag) = rest.split_once("/?").ok_or(TopicError::Unknown)?;
            return Ok(Self::TwinResponse {
                status: status.parse().map_err(|_| TopicError::BadStatus)?,
                rid: rid_in(bag)?,
                version: version_in(bag)?,
            });
        }
        if let Some(rest) = topic.strip_prefix(TWIN_DESIRED) {
            let bag = rest.strip_prefix("/?").ok_or(TopicError::Unknown)?;
            return Ok(Self::DesiredPatch {
                version: version_in(bag)?.ok_or(TopicError::BadVersion)?,
            });
        }
        if let Some(rest) = topic.strip_prefix(METHODS_POST) {
            let (name, bag) = rest.split_once("/?").ok_or(TopicError::Unknown)?;
            if name.is_empty() || name.contains('/') {
                return Err(TopicError::Unknown);
            }
            return Ok(Self::MethodRequest {
                name,
                rid: rid_in(bag)?,
            });
        }
        let (device_id, module_id, rest) = device_prefix(topic)?;
        match module_id {
            None => {
                let properties = rest
                    .strip_prefix("messages/devicebound/")
                    .ok_or(TopicError::Unknown)?;
                Ok(Self::CloudToDevice {
                    device_id,
                    properties,
                })
            }
            Some(module_id) => {
                let rest = rest.strip_prefix("inputs/").ok_or(TopicError::Unknown)?;
                let (input, properties) = id_segment(rest)?;
                Ok(Self::ModuleInput {
                    device_id,
                    module_id,
                    input,
                    properties,
                })
            }
        }
    }

    /// The topic string, with the `/` before `?` and the trailing `/` the SDKs need.
    pub fn to_topic(&self) -> String {
        match *self {
            Self::TwinResponse {
                status,
                rid,
                version,
            } => twin_response_topic(status, rid, version),
            Self::DesiredPatch { version } => desired_patch_topic(version),
            Self::MethodRequest { name, rid } => format!("{METHODS_POST}{name}/?$rid={rid}"),
            Self::CloudToDevice {
                device_id,
                properties,
            } => format!("devices/{device_id}/messages/devicebound/{properties}"),
            Self::ModuleInput {
                device_id,
                module_id,
                input,
                properties,
            } => format!("devices/{device_id}/modules/{module_id}/inputs/{input}/{properties}"),
        }
    }
}

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={n}]`.
pub fn twin_response_topic(status: u16, rid: &str, version: Option<i64>) -> String {
    match version {
        Some(v) => format!("{TWIN_RES}{status}/?$rid={rid}&$version={v}"),
        None => format!("{TWIN_RES}{status}/?$rid={rid}"),
    }
}

/// `$iothub/twin/PATCH/properties/desired/?$version={n}`.
pub fn desired_patch_topic(version: i64) -> String {
    format!("{TWIN_DESIRED}/?$version={version}")
}

impl<'a> Filter<'a> {
    /// Parses a SUBSCRIBE topic filter; anything outside the catalogue is an error.
    pub fn parse(filter: &'a str) -> Result<Self, TopicError> {
        match filter {
            "$iothub/twin/res/#" => return Ok(Self::TwinResponses),
            "$iothub/twin/PATCH/properties/desired/#" => return Ok(Self::DesiredPatches),
            "$iothub/methods/POST/#" => return Ok(Self::MethodRequests),
            _ => {}
        }
        let (device_id, module_id, rest) = device_prefix(filter)?;
        match (module_id, rest) {
            (None, "messages/devicebound/#") => Ok(Self::CloudToDevice { device_id }),
            (Some(module_id), "inputs/#") => Ok(Self::ModuleInputs {
                device_id,
                module_id,
            }),
            _ => Err(TopicError::Unknown),
        }
    }

    /// The filter string.
    pub fn to_filter(&self) -> String {
        match *self {
            Self::TwinResponses => "$iothub/twin/res/#".to_owned(),
            Self::DesiredPatches => "$iothub/twin/PATCH/properties/desired/#".to_owned(),
            Self::MethodRequests => "$iothub/methods/POST/#".to_owned(),
            Self::CloudToDevice { device_id } => {
                format!("devices/{device_id}/messages/devicebound/#")
            }
            Self::ModuleInputs {
                device_id,
                module_id,
            } => format!("devices/{device_id}/modules/{module_id}/inputs/#"),
        }
    }
}

/// A CONNECT username: `{host}/{deviceId}[/{moduleId}]/?api-version=...&...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username<'a> {
    /// The hub host name the client believes it talks to.
    pub host: &'a str,
    /// The device id (not URL-encoded by the SDKs, so taken as is).
    pub device_id: &'a str,
    /// The module id, for a module identity.
    pub module_id: Option<&'a str>,
    /// `api-version`, percent-decoded; required, never checked.
    pub api_version: Cow<'a, str>,
    /// `DeviceClientType`, percent-decoded; empty when absent.
    pub client_type: Cow<'a, str>,
    /// `model-id` (IoT Plug and Play), percent-decoded, when present and not blank.
    pub model_id: Option<Cow<'a, str>>,
}

impl<'a> Username<'a> {
    /// Parses a username the way edgeHub's `MqttUsernameParser` does: split on `/`;
    /// the last segment is the property bag if it starts with `?` or, without `?`,
    /// contains `api-version=`; 3 segments name a device, 4 a module. Properties
    /// split on `&` and the first `=`, the first of a repeated key wins, values are
    /// percent-decoded (`+` stays `+`), unknown keys are ignored.
    pub fn parse(username: &'a str) -> Result<Self, UsernameError> {
        let segments: Vec<&str> = username.split('/').collect();
        let last = segments.last().copied().unwrap_or_default();
        let bag = match last.strip_prefix('?') {
            Some(bag) => bag,
            None if last.contains("api-version=") => last,
            None => return Err(UsernameError::Shape),
        };
        let (host, device_id, module_id) = match segments.as_slice() {
            [host, device, _] => (*host, *device, None),
            [host, device, module, _] => (*host, *device, Some(*module)),
            _ => return Err(UsernameError::Shape),
        };
        if host.is_empty() || device_id.is_empty() || module_id.is_some_and(str::is_empty) {
            return Err(UsernameError::EmptyField);
        }
        let value =
            |key: &str| property(bag, key).map(|v| percent_decode_str(v).decode_utf8_lossy());
        let api_version = value("api-version")
            .filter(|v| !v.trim().is_empty())
            .ok_or(UsernameError::MissingApiVersion)?;
        Ok(Self {
            host,
            device_id,
            module_id,
            api_version,
            client_type: value("DeviceClientType").unwrap_or_default(),
            model_id: value("model-id").filter(|v| !v.trim().is_empty()),
        })
    }

    /// The client id this username implies: `{deviceId}` or `{deviceId}/{moduleId}`.
    pub fn client_id(&self) -> Cow<'a, str> {
        match self.module_id {
            Some(m) => Cow::Owned(format!("{}/{m}", self.device_id)),
            None => Cow::Borrowed(self.device_id),
        }
    }

    /// The username as the SDKs write it (`/?` form, values percent-encoded).
    pub fn to_username(&self) -> String {
        use crate::sas::encode_component as enc;
        let mut out = match self.module_id {
            Some(m) => format!("{}/{}/{m}/?", self.host, self.device_id),
            None => format!("{}/{}/?", self.host, self.device_id),
        };
        out.push_str("api-version=");
        out.push_str(&enc(&self.api_version));
        out.push_str("&DeviceClientType=");
        out.push_str(&enc(&self.client_type));
        if let Some(model) = &self.model_id {
            out.push_str("&model-id=");
            out.push_str(&enc(model));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sdk_device_topics_parse() {
        assert_eq!(
            DeviceTopic::parse("$iothub/twin/GET/?$rid=9ec93593-13ae-4711-bd9d-45faf055e52c"),
            Ok(DeviceTopic::TwinGet {
                rid: "9ec93593-13ae-4711-bd9d-45faf055e52c"
            })
        );
        assert_eq!(
            DeviceTopic::parse("$iothub/twin/PATCH/properties/reported/?$rid=1&$version=5"),
            Ok(DeviceTopic::ReportedPatch {
                rid: "1",
                version: Some(5)
            })
        );
        assert_eq!(
            DeviceTopic::parse("$iothub/twin/PATCH/properties/reported?$rid=abc"),
            Ok(DeviceTopic::ReportedPatch {
                rid: "abc",
                version: None
            })
        );
        assert_eq!(
            DeviceTopic::parse("devices/dev1/messages/events/"),
            Ok(DeviceTopic::Telemetry {
                device_id: "dev1",
                module_id: None,
                properties: ""
            })
        );
        assert_eq!(
            DeviceTopic::parse("devices/d/modules/m/messages/events/%24.on=out/"),
            Ok(DeviceTopic::Telemetry {
                device_id: "d",
                module_id: Some("m"),
                properties: "%24.on=out/"
            })
        );
        assert_eq!(
            DeviceTopic::parse("$iothub/methods/res/200/?$rid=2a"),
            Ok(DeviceTopic::MethodResponse {
                status: 200,
                rid: "2a"
            })
        );
    }

    #[test]
    fn bad_device_topics_are_refused() {
        for (topic, err) in [
            ("$iothub/twin/GET/", TopicError::Unknown),
            ("$iothub/twin/GET/?", TopicError::MissingRequestId),
            ("$iothub/twin/GET/?$rid=", TopicError::MissingRequestId),
            ("$iothub/twin/get/?$rid=1", TopicError::Unknown),
            ("$iothub/twin/GETX/?$rid=1", TopicError::Unknown),
            (
                "$iothub/twin/PATCH/properties/reported/?$rid=1&$version=x",
                TopicError::BadVersion,
            ),
            (
                "$iothub/twin/PATCH/properties/desired/?$rid=1",
                TopicError::Unknown,
            ),
            ("devices//messages/events/", TopicError::EmptyId),
            ("devices/d/messages/eventsX", TopicError::Unknown),
            ("devices/d/messages/devicebound/", TopicError::Unknown),
            ("$iothub/methods/res/x/?$rid=1", TopicError::BadStatus),
            ("hello", TopicError::Unknown),
        ] {
            assert_eq!(DeviceTopic::parse(topic), Err(err), "{topic}");
        }
    }

    #[test]
    fn hub_topics_keep_the_slash_before_the_query() {
        assert_eq!(
            twin_response_topic(200, "r1", None),
            "$iothub/twin/res/200/?$rid=r1"
        );
        assert_eq!(
            twin_response_topic(204, "r1", Some(8)),
            "$iothub/twin/res/204/?$rid=r1&$version=8"
        );
        assert_eq!(
            desired_patch_topic(8),
            "$iothub/twin/PATCH/properties/desired/?$version=8"
        );
        assert_eq!(
            HubTopic::CloudToDevice {
                device_id: "d",
                properties: ""
            }
            .to_topic(),
            "devices/d/messages/devicebound/"
        );
    }

    #[test]
    fn sdk_filters_parse_and_others_do_not() {
        assert_eq!(
            Filter::parse("$iothub/twin/res/#"),
            Ok(Filter::TwinResponses)
        );
        assert_eq!(
            Filter::parse("$iothub/twin/PATCH/properties/desired/#"),
            Ok(Filter::DesiredPatches)
        );
        assert_eq!(
            Filter::parse("$iothub/methods/POST/#"),
            Ok(Filter::MethodRequests)
        );
        assert_eq!(
            Filter::parse("devices/dev1/messages/devicebound/#"),
            Ok(Filter::CloudToDevice { device_id: "dev1" })
        );
        assert_eq!(
            Filter::parse("devices/d/modules/m/inputs/#"),
            Ok(Filter::ModuleInputs {
                device_id: "d",
                module_id: "m"
            })
        );
        for f in [
            "#",
            "$iothub/#",
            "$iothub/twin/res/+",
            "devices/d/messages/#",
            "x",
        ] {
            assert_eq!(Filter::parse(f), Err(TopicError::Unknown), "{f}");
        }
        // A wildcard where the id goes parses as an id; the session refuses it as
        // another device's.
        assert_eq!(
            Filter::parse("devices/+/messages/devicebound/#"),
            Ok(Filter::CloudToDevice { device_id: "+" })
        );
    }

    #[test]
    fn sdk_usernames_parse() {
        let node = "localhost/dev1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)";
        let u = Username::parse(node).unwrap();
        assert_eq!(
            (u.host, u.device_id, u.module_id),
            ("localhost", "dev1", None)
        );
        assert_eq!(u.api_version, "2021-04-12");
        assert_eq!(
            u.client_type,
            "azure-iot-device/1.18.4 (node v20.20.2; Debian 12; x64)"
        );
        assert_eq!(u.client_id(), "dev1");

        let pnp =
            "h/d/?api-version=2021-04-12&model-id=dtmi:com:example:Thermostat;1&DeviceClientType=x";
        let u = Username::parse(pnp).unwrap();
        assert_eq!(u.model_id.as_deref(), Some("dtmi:com:example:Thermostat;1"));
        let py = "h/d/?api-version=2020-09-30&DeviceClientType=p&model-id=dtmi%3Acom%3Ax%3B1";
        assert_eq!(
            Username::parse(py).unwrap().model_id.as_deref(),
            Some("dtmi:com:x;1")
        );

        let module = Username::parse("h/d/m/?api-version=1").unwrap();
        assert_eq!(module.module_id, Some("m"));
        assert_eq!(module.client_id(), "d/m");
        assert_eq!(module.client_type, "");

        let no_question = Username::parse("h/d/api-version=1&DeviceClientType=c").unwrap();
        assert_eq!(
            (no_question.device_id, &*no_question.client_type),
            ("d", "c")
        );
    }

    #[test]
    fn bad_usernames_are_refused() {
        for (u, err) in [
            ("", UsernameError::Shape),
            ("h/d", UsernameError::Shape),
            ("h/d/x", UsernameError::Shape),
            ("h/d/m/x/?api-version=1", UsernameError::Shape),
            ("h//?api-version=1", UsernameError::EmptyField),
            ("/d/?api-version=1", UsernameError::EmptyField),
            ("h/d//?api-version=1", UsernameError::EmptyField),
            ("h/d/?DeviceClientType=x", UsernameError::MissingApiVersion),
            ("h/d/?api-version=%20", UsernameError::MissingApiVersion),
        ] {
            assert_eq!(Username::parse(u), Err(err), "{u:?}");
        }
    }

    fn id() -> impl Strategy<Value = String> {
        // IoT Hub's device id alphabet, minus nothing: ids are not encoded in topics.
        "[A-Za-z0-9\\-.+%_*?!(),:=@$']{1,20}"
    }
    fn rid() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~-]{1,40}"
    }
    fn bag() -> impl Strategy<Value = String> {
        "([a-z%0-9.$]{1,6}=[A-Za-z0-9%.]{0,6}(&[a-z%0-9.]{1,6}=[A-Za-z0-9%]{0,6}){0,3})?"
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = DeviceTopic::parse(&s);
            let _ = HubTopic::parse(&s);
            let _ = Filter::parse(&s);
            let _ = Username::parse(&s);
        }

        #[test]
        fn parsers_never_panic_near_valid(
            prefix in prop::sample::select(vec![
                "$iothub/twin/GET", "$iothub/twin/PATCH/properties/reported",
                "$iothub/twin/res/", "$iothub/methods/res/", "$iothub/methods/POST/",
                "devices/", "devices/d/modules/", "$iothub/twin/PATCH/properties/desired",
            ]),
            tail in "[/?&=$a-z0-9#+]{0,24}",
        ) {
            let s = format!("{prefix}{tail}");
            let _ = DeviceTopic::parse(&s);
            let _ = HubTopic::parse(&s);
            let _ = Filter::parse(&s);
            let _ = Username::parse(&format!("h/{s}"));
        }

        #[test]
        fn device_topics_round_trip(
            rid in rid(), version in prop::option::of(any::<i64>()),
            device in id(), module in prop::option::of(id()), props in bag(),
            status in any::<i32>(), which in 0..4u8,
        ) {
            let topic = match which {
                0 => DeviceTopic::TwinGet { rid: &rid },
                1 => DeviceTopic::ReportedPatch { rid: &rid, version },
                2 => DeviceTopic::Telemetry {
                    device_id: &device, module_id: module.as_deref(), properties: &props,
                },
                _ => DeviceTopic::MethodResponse { status, rid: &rid },
            };
            let text = topic.to_topic();
            prop_assert_eq!(DeviceTopic::parse(&text), Ok(topic));
        }

        #[test]
        fn hub_topics_round_trip(
            rid in rid(), version in prop::option::of(any::<i64>()), v in any::<i64>(),
            status in any::<u16>(), name in "[A-Za-z0-9_-]{1,20}",
            device in id(), module in id(), input in "[A-Za-z0-9_-]{1,10}",
            props in bag(), which in 0..5u8,
        ) {
            let topic = match which {
                0 => HubTopic::TwinResponse { status, rid: &rid, version },
                1 => HubTopic::DesiredPatch { version: v },
                2 => HubTopic::MethodRequest { name: &name, rid: &rid },
                3 => HubTopic::CloudToDevice { device_id: &device, properties: &props },
                _ => HubTopic::ModuleInput {
                    device_id: &device, module_id: &module, input: &input, properties: &props,
                },
            };
            let text = topic.to_topic();
            prop_assert_eq!(HubTopic::parse(&text), Ok(topic));
        }

        #[test]
        fn filters_round_trip(device in id(), module in id(), which in 0..5u8) {
            let filter = match which {
                0 => Filter::TwinResponses,
                1 => Filter::DesiredPatches,
                2 => Filter::MethodRequests,
                3 => Filter::CloudToDevice { device_id: &device },
                _ => Filter::ModuleInputs { device_id: &device, module_id: &module },
            };
            let text = filter.to_filter();
            prop_assert_eq!(Filter::parse(&text), Ok(filter));
        }

        #[test]
        fn usernames_round_trip(
            host in "[a-z0-9.-]{1,20}", device in id(), module in prop::option::of(id()),
            api in "[0-9-]{1,10}", client in "\\PC{0,30}", model in prop::option::of("[a-z:;0-9]{1,20}"),
        ) {
            let u = Username {
                host: &host,
                device_id: &device,
                module_id: module.as_deref(),
                api_version: Cow::Borrowed(&api),
                client_type: Cow::Borrowed(&client),
                model_id: model.as_deref().map(Cow::Borrowed),
            };
            let text = u.to_username();
            prop_assert_eq!(Username::parse(&text), Ok(u));
        }
    }
}
