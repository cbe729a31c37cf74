//! IoT Hub's MQTT topic grammar and CONNECT username (`twinhub_core::topic`).
//!
//! Every parser must refuse or accept without panicking, and what it accepts must
//! survive a round trip through the matching builder: `parse(to_string(x)) == x`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twinhub_core::topic::{DeviceTopic, Filter, HubTopic, Username};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topic) = DeviceTopic::parse(text) {
        let again = topic.to_topic();
        assert_eq!(
            DeviceTopic::parse(&again),
            Ok(topic),
            "device topic {again:?}"
        );
    }
    if let Ok(topic) = HubTopic::parse(text) {
        let again = topic.to_topic();
        assert_eq!(HubTopic::parse(&again), Ok(topic), "hub topic {again:?}");
    }
    if let Ok(filter) = Filter::parse(text) {
        let again = filter.to_filter();
        assert_eq!(Filter::parse(&again), Ok(filter), "filter {again:?}");
    }
    if let Ok(username) = Username::parse(text) {
        assert!(!username.device_id.is_empty() && !username.host.is_empty());
        assert!(!username.api_version.trim().is_empty());
        let client_id = username.client_id();
        assert!(client_id.starts_with(username.device_id));
        let again = username.to_username();
        let reparsed = Username::parse(&again);
        assert_eq!(reparsed.as_ref(), Ok(&username), "username {again:?}");
    }
});
