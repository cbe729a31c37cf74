//! The handshake's pure half: from a CONNECT packet to a [`Login`] to check, or to
//! the CONNACK code that refuses it.
//!
//! IoT Hub answers every authentication failure with 5 (Not authorized, spec
//! §2.3); so does this, including for a client id that does not match the
//! username, which would otherwise let a device speak under another's name.

use crate::backend::Identity;
use crate::packet::{Connect, ConnectReturnCode};
use twinhub_core::topic::{DeviceTopic, Username};
use twinhub_core::{ErrorCode, HubError};

/// A CONNECT that is well-formed for IoT Hub, with credentials still to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The identity the client claims.
    pub identity: Identity,
    /// The password: a SAS token.
    pub password: String,
    /// Clean session flag.
    pub clean_session: bool,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
}

/// Why a CONNECT is refused: the CONNACK code and, for logs, the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The CONNACK return code to send.
    pub code: ConnectReturnCode,
    /// What was wrong, for the debug log only.
    pub reason: &'static str,
}

fn refuse(code: ConnectReturnCode, reason: &'static str) -> Refusal {
    Refusal { code, reason }
}

/// Checks a CONNECT against IoT Hub's rules (spec §2.2).
pub fn login(connect: &Connect) -> Result<Login, Refusal> {
    use ConnectReturnCode::{IdentifierRejected, NotAuthorized, UnacceptableProtocolVersion};
    if connect.level != 4 {
        return Err(refuse(
            UnacceptableProtocolVersion,
            "[MQTT-3.1.2-2] only protocol level 4 (MQTT 3.1.1) is supported",
        ));
    }
    if connect.client_id.is_empty() {
        return Err(refuse(
            IdentifierRejected,
            "[MQTT-3.1.3-8] IoT Hub needs the device id as client id",
        ));
    }
    let username = connect
        .username
        .as_deref()
        .ok_or(refuse(NotAuthorized, "no username"))?;
    let username =
        Username::parse(username).map_err(|_| refuse(NotAuthorized, "malformed username"))?;
    if username.client_id() != connect.client_id {
        return Err(refuse(
            NotAuthorized,
            "client id does not match the username",
        ));
    }
    let password = connect
        .password
        .as_deref()
        .ok_or(refuse(NotAuthorized, "no password"))?;
    let password = std::str::from_utf8(password)
        .map_err(|_| refuse(NotAuthorized, "password is not UTF-8"))?;
    let identity = Identity {
        device_id: username.device_id.to_owned(),
        module_id: username.module_id.map(str::to_owned),
    };
    if let Some(will) = &connect.will {
        // IoT Hub accepts a will only on the identity's own telemetry topic.
        let own = matches!(
            DeviceTopic::parse(&will.topic),
            Ok(DeviceTopic::Telemetry { device_id, module_id, .. })
                if device_id == identity.device_id && module_id == identity.module_id.as_deref()
        );
        if !own {
            return Err(refuse(
                NotAuthorized,
                "will topic is not the device's telemetry topic",
            ));
        }
    }
    Ok(Login {
        identity,
        password: password.to_owned(),
        clean_session: connect.clean_session,
        keep_alive: connect.keep_alive,
    })
}

/// The CONNACK code for a backend's refusal: 3 when the hub cannot serve now,
/// 5 for everything else.
pub fn refusal_code(error: &HubError) -> ConnectReturnCode {
    match error.code {
        ErrorCode::ServiceUnavailable | ErrorCode::ThrottlingException | ErrorCode::ServerError => {
            ConnectReturnCode::ServerUnavailable
        }
        _ => ConnectReturnCode::NotAuthorized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{QoS, Will};
    use bytes::Bytes;

    fn connect(client_id: &str, username: Option<&str>) -> Connect {
        Connect {
            level: 4,
            clean_session: false,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: username.map(Into::into),
            password: Some(Bytes::from_static(b"SharedAccessSignature sr=x")),
        }
    }

    #[test]
    fn sdk_connects_log_in() {
        let l = login(&connect(
            "dev1",
            Some("localhost/dev1/?api-version=2021-04-12&DeviceClientType=x"),
        ))
        .unwrap();
        assert_eq!(l.identity, Identity::device("dev1"));
        assert_eq!(l.password, "SharedAccessSignature sr=x");
        assert_eq!(l.keep_alive, 60);
        let m = login(&connect("d/m", Some("h/d/m/?api-version=1"))).unwrap();
        assert_eq!(m.identity.module_id.as_deref(), Some("m"));
    }

    #[test]
    fn refusals_carry_iot_hub_codes() {
        let code = |c: Connect| login(&c).unwrap_err().code;
        let mut v3 = connect("dev1", Some("h/dev1/?api-version=1"));
        v3.level = 3;
        assert_eq!(code(v3), ConnectReturnCode::UnacceptableProtocolVersion);
        assert_eq!(
            code(connect("", Some("h/dev1/?api-version=1"))),
            ConnectReturnCode::IdentifierRejected
        );
        assert_eq!(
            code(connect("dev1", None)),
            ConnectReturnCode::NotAuthorized
        );
        assert_eq!(
            code(connect("dev2", Some("h/dev1/?api-version=1"))),
            ConnectReturnCode::NotAuthorized
        );
        assert_eq!(
            code(connect("dev1", Some("h/dev1"))),
            ConnectReturnCode::NotAuthorized
        );
        let mut no_password = connect("dev1", Some("h/dev1/?api-version=1"));
        no_password.password = None;
        assert_eq!(code(no_password), ConnectReturnCode::NotAuthorized);
    }

    #[test]
    fn wills_only_on_own_telemetry() {
        let with_will = |topic: &str| {
            let mut c = connect("dev1", Some("h/dev1/?api-version=1"));
            c.will = Some(Will {
                topic: topic.into(),
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: false,
            });
            login(&c)
        };
        assert!(with_will("devices/dev1/messages/events/").is_ok());
        assert!(with_will("devices/dev2/messages/events/").is_err());
        assert!(with_will("$iothub/twin/GET/?$rid=1").is_err());
    }

    #[test]
    fn backend_errors_map_to_codes() {
        assert_eq!(
            refusal_code(&HubError::unauthorized()),
            ConnectReturnCode::NotAuthorized
        );
        assert_eq!(
            refusal_code(&HubError::device_not_found("d")),
            ConnectReturnCode::NotAuthorized
        );
        assert_eq!(
            refusal_code(&HubError::new(ErrorCode::ServiceUnavailable, "down")),
            ConnectReturnCode::ServerUnavailable
        );
    }
}
