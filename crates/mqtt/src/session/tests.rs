//! Session tests on a virtual clock: every input carries an explicit `now`.

use super::*;
use serde_json::json;

const T0: i64 = 1_700_000_000;

fn at(secs: f64) -> Timestamp {
    // Test times are small multiples of a tenth of a second; rounding is exact enough.
    #[allow(clippy::cast_possible_truncation)]
    Timestamp::from_unix_nanos(T0 * NANOS + (secs * 1e9) as i64)
}

fn session_with(keep_alive: u16, subscriptions: Subscriptions) -> Session {
    Session::new(
        SessionParams {
            identity: Identity::device("dev1"),
            keep_alive,
            token_expiry: T0 + 3600,
            subscriptions,
            tracking_id: 7,
        },
        at(0.0),
    )
}

fn session() -> Session {
    session_with(60, Subscriptions::default())
}

fn drain(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action())
        .filter(|a| *a != Action::Activity)
        .collect()
}

fn publish(topic: &str, qos: QoS, id: u16, payload: &[u8]) -> ClientPacket {
    ClientPacket::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: id,
        payload: Bytes::copy_from_slice(payload),
    })
}

fn subscribe(id: u16, filters: &[(&str, QoS)]) -> ClientPacket {
    ClientPacket::Subscribe(Subscribe {
        packet_id: id,
        filters: filters.iter().map(|(f, q)| ((*f).into(), *q)).collect(),
    })
}

fn sent(actions: &[Action]) -> Vec<&ServerPacket> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn published(actions: &[Action]) -> Vec<&Publish> {
    sent(actions)
        .into_iter()
        .filter_map(|p| match p {
            ServerPacket::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn keep_alive_expires_at_one_and_a_half_times() {
    let mut s = session();
    assert_eq!(s.poll_timeout(), Some(at(90.0)));
    assert_eq!(s.handle_timeout(at(89.9)), Ok(()));
    assert_eq!(s.handle_timeout(at(90.0)), Err(Close::KeepAliveTimeout));
}

#[test]
fn any_packet_resets_the_keep_alive() {
    let mut s = session();
    s.handle_packet(
        publish("devices/dev1/messages/events/", QoS::AtMostOnce, 0, b"x"),
        at(80.0),
    )
    .unwrap();
    assert_eq!(s.handle_timeout(at(150.0)), Ok(()));
    assert_eq!(s.poll_timeout(), Some(at(170.0)));
    s.handle_packet(ClientPacket::PingReq, at(160.0)).unwrap();
    assert_eq!(drain(&mut s), [Action::Send(ServerPacket::PingResp)]);
    assert_eq!(s.handle_timeout(at(249.0)), Ok(()));
    assert_eq!(s.handle_timeout(at(250.0)), Err(Close::KeepAliveTimeout));
}

#[test]
fn keep_alive_is_capped_and_zero_disables_it() {
    let s = session_with(u16::MAX, Subscriptions::default());
    assert_eq!(s.poll_timeout(), Some(at(1767.0)));
    let mut s = session_with(0, Subscriptions::default());
    // Only the token deadline is left.
    assert_eq!(s.poll_timeout(), Some(at(3600.0)));
    assert_eq!(s.handle_timeout(at(3000.0)), Ok(()));
}

#[test]
fn token_expiry_closes_even_an_active_session() {
    let mut s = session_with(0, Subscriptions::default());
    s.handle_packet(ClientPacket::PingReq, at(3599.0)).unwrap();
    assert_eq!(s.handle_timeout(at(3599.9)), Ok(()));
    assert_eq!(s.handle_timeout(at(3600.0)), Err(Close::TokenExpired));
}

#[test]
fn qos2_publish_closes() {
    let mut s = session();
    let r = s.handle_packet(
        publish("$iothub/twin/GET/?$rid=1", QoS::ExactlyOnce, 1, b" "),
        at(1.0),
    );
    assert!(matches!(r, Err(Close::Protocol(_))), "{r:?}");
}

#[test]
fn foreign_and_unknown_topics_close() {
    for topic in [
        "devices/dev2/messages/events/",
        "devices/dev1/modules/m/messages/events/",
        "devices/dev1/messages/devicebound/",
        "$iothub/twin/PATCH/properties/desired/?$version=1",
        "$iothub/twin/GET/",
        "random/topic",
    ] {
        let mut s = session();
        let r = s.handle_packet(publish(topic, QoS::AtLeastOnce, 1, b"{}"), at(1.0));
        assert_eq!(r, Err(Close::ForbiddenTopic(topic.into())), "{topic}");
        assert!(
            sent(&drain(&mut s)).is_empty(),
            "{topic}: nothing acknowledged"
        );
    }
}

#[test]
fn unsupported_or_foreign_filters_close() {
    for filter in [
        "#",
        "$iothub/twin/res/+",
        "devices/dev2/messages/devicebound/#",
        "devices/dev1/modules/m/inputs/#",
    ] {
        let mut s = session();
        let r = s.handle_packet(
            subscribe(
                1,
                &[
                    ("$iothub/twin/res/#", QoS::AtMostOnce),
                    (filter, QoS::AtMostOnce),
                ],
            ),
            at(1.0),
        );
        assert_eq!(r, Err(Close::ForbiddenFilter(filter.into())), "{filter}");
        assert_eq!(
            s.subscriptions(),
            Subscriptions::default(),
            "all or nothing"
        );
    }
}

#[test]
fn subscribe_grants_at_most_qos1() {
    let mut s = session();
    s.handle_packet(
        subscribe(
            9,
            &[
                ("$iothub/twin/res/#", QoS::ExactlyOnce),
                ("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce),
                ("$iothub/methods/POST/#", QoS::AtLeastOnce),
                ("devices/dev1/messages/devicebound/#", QoS::AtLeastOnce),
            ],
        ),
        at(1.0),
    )
    .unwrap();
    let expected = Subscriptions {
        twin_responses: Some(QoS::AtLeastOnce),
        desired: Some(QoS::AtMostOnce),
        methods: Some(QoS::AtLeastOnce),
        cloud_to_device: Some(QoS::AtLeastOnce),
        module_inputs: None,
    };
    assert_eq!(
        drain(&mut s),
        [
            Action::SubscriptionsChanged(expected),
            Action::Send(ServerPacket::SubAck {
                packet_id: 9,
                granted: vec![
                    Some(QoS::AtLeastOnce),
                    Some(QoS::AtMostOnce),
                    Some(QoS::AtLeastOnce),
                    Some(QoS::AtLeastOnce)
                ]
            }),
        ]
    );
}

#[test]
fn subscriptions_round_trip_through_their_filters() {
    let device = Identity::device("dev1");
    let all = Subscriptions {
        twin_responses: Some(QoS::AtLeastOnce),
        desired: Some(QoS::AtMostOnce),
        methods: Some(QoS::AtLeastOnce),
        cloud_to_device: Some(QoS::AtLeastOnce),
        module_inputs: None,
    };
    let filters = all.filters(&device);
    assert_eq!(filters.len(), 4);
    assert!(filters.contains(&(
        "devices/dev1/messages/devicebound/#".into(),
        QoS::AtLeastOnce
    )));
    let back = Subscriptions::from_filters(&device, filters.iter().map(|(f, q)| (f.as_str(), *q)));
    assert_eq!(back, all);
    // Another identity's filters, unknown ones and QoS 2 are not restored as such.
    let other = Subscriptions::from_filters(
        &Identity::device("dev2"),
        filters.iter().map(|(f, q)| (f.as_str(), *q)),
    );
    assert_eq!(other.cloud_to_device, None);
    let capped = Subscriptions::from_filters(
        &device,
        [
            ("$iothub/twin/res/#", QoS::ExactlyOnce),
            ("#", QoS::AtMostOnce),
        ],
    );
    assert_eq!(
        capped,
        Subscriptions {
            twin_responses: Some(QoS::AtLeastOnce),
            ..Subscriptions::default()
        }
    );
    assert!(Subscriptions::default().is_empty() && !capped.is_empty());
    let module = Identity {
        device_id: "dev1".into(),
        module_id: Some("m".into()),
    };
    let inputs = Subscriptions {
        module_inputs: Some(QoS::AtLeastOnce),
        cloud_to_device: Some(QoS::AtLeastOnce),
        ..Subscriptions::default()
    };
    assert_eq!(
        inputs.filters(&module),
        [(
            "devices/dev1/modules/m/inputs/#".to_owned(),
            QoS::AtLeastOnce
        )]
    );
}

#[test]
fn unsubscribe_always_acks_and_reports_changes() {
    let mut s = session_with(
        60,
        Subscriptions {
            desired: Some(QoS::AtLeastOnce),
            ..Subscriptions::default()
        },
    );
    let unsub = |id, f: &str| {
        ClientPacket::Unsubscribe(Unsubscribe {
            packet_id: id,
            filters: vec![f.into()],
        })
    };
    s.handle_packet(unsub(3, "nothing/#"), at(1.0)).unwrap();
    assert_eq!(drain(&mut s), [Action::Send(ServerPacket::UnsubAck(3))]);
    s.handle_packet(unsub(4, "$iothub/twin/PATCH/properties/desired/#"), at(1.0))
        .unwrap();
    assert_eq!(
        drain(&mut s),
        [
            Action::SubscriptionsChanged(Subscriptions::default()),
            Action::Send(ServerPacket::UnsubAck(4)),
        ]
    );
}

#[test]
fn twin_get_is_acked_then_answered_even_without_subscription() {
    let mut s = session();
    s.handle_packet(
        publish("$iothub/twin/GET/?$rid=abc", QoS::AtLeastOnce, 5, b" "),
        at(1.0),
    )
    .unwrap();
    assert_eq!(
        drain(&mut s),
        [
            Action::Send(ServerPacket::PubAck(5)),
            Action::GetTwin { rid: "abc".into() }
        ]
    );
    let twin = json!({"desired": {"$version": 1}, "reported": {"$version": 1}});
    s.twin_read("abc", Ok(twin.clone()), at(1.1)).unwrap();
    let actions = drain(&mut s);
    let p = published(&actions);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].topic, "$iothub/twin/res/200/?$rid=abc");
    assert_eq!(p[0].qos, QoS::AtMostOnce, "unsubscribed: QoS 0");
    assert_eq!(
        serde_json::from_slice::<Value>(&p[0].payload).unwrap(),
        twin
    );
}

#[test]
fn reported_patch_answers_204_with_version_and_empty_body() {
    let mut s = session_with(
        60,
        Subscriptions {
            twin_responses: Some(QoS::AtLeastOnce),
            ..Subscriptions::default()
        },
    );
    s.handle_packet(
        publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=r1&$version=4",
            QoS::AtMostOnce,
            0,
            br#"{"fw":"2.0"}"#,
        ),
        at(1.0),
    )
    .unwrap();
    assert_eq!(
        drain(&mut s),
        [Action::PatchReported {
            rid: "r1".into(),
            patch: json!({"fw": "2.0"}),
            version: Some(4)
        }]
    );
    s.reported_patched("r1", Ok(5), at(1.2)).unwrap();
    let actions = drain(&mut s);
    let p = published(&actions);
    assert_eq!(p[0].topic, "$iothub/twin/res/204/?$rid=r1&$version=5");
    assert!(p[0].payload.is_empty());
    assert_eq!((p[0].qos, p[0].packet_id), (QoS::AtLeastOnce, 1));
}

#[test]
fn twin_errors_carry_iot_hub_json() {
    let mut s = session();
    s.reported_patched("r2", Err(HubError::precondition("stale")), at(2.0))
        .unwrap();
    let actions = drain(&mut s);
    let p = published(&actions);
    assert_eq!(p[0].topic, "$iothub/twin/res/412/?$rid=r2");
    let body: Value = serde_json::from_slice(&p[0].payload).unwrap();
    assert_eq!(body["errorCode"], 412_001);
    assert_eq!(body["message"], "stale");
    assert_eq!(body["timestampUtc"], at(2.0).to_iso());
    assert_eq!(
        body["trackingId"].as_str().map(str::len),
        Some(32),
        "{body}"
    );
}

#[test]
fn unparsable_reported_patch_is_a_400_not_a_close() {
    let mut s = session();
    s.handle_packet(
        publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=r3",
            QoS::AtMostOnce,
            0,
            b"{nope",
        ),
        at(1.0),
    )
    .unwrap();
    let actions = drain(&mut s);
    let p = published(&actions);
    assert_eq!(p[0].topic, "$iothub/twin/res/400/?$rid=r3");
    let body: Value = serde_json::from_slice(&p[0].payload).unwrap();
    assert_eq!(body["errorCode"], 400_006);
}

#[test]
fn desired_notifications_need_a_subscription() {
    let mut s = session();
    let patch = json!({"x": 1, "gone": null, "$version": 8});
    s.desired_changed(8, &patch, at(1.0)).unwrap();
    assert!(drain(&mut s).is_empty());
    s.handle_packet(
        subscribe(
            1,
            &[("$iothub/twin/PATCH/properties/desired/#", QoS::AtLeastOnce)],
        ),
        at(2.0),
    )
    .unwrap();
    drain(&mut s);
    s.desired_changed(9, &patch, at(3.0)).unwrap();
    let actions = drain(&mut s);
    let p = published(&actions);
    assert_eq!(
        p[0].topic,
        "$iothub/twin/PATCH/properties/desired/?$version=9"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&p[0].payload).unwrap(),
        patch
    );
    assert_eq!(p[0].qos, QoS::AtLeastOnce);
}

fn subscribed_qos1() -> Session {
    session_with(
        60,
        Subscriptions {
            desired: Some(QoS::AtLeastOnce),
            twin_responses: Some(QoS::AtLeastOnce),
            ..Subscriptions::default()
        },
    )
}

#[test]
fn qos1_window_queues_then_drains_on_puback() {
    let mut s = subscribed_qos1();
    let v = json!({"$version": 1});
    for i in 0..MAX_IN_FLIGHT + 3 {
        s.desired_changed(i64::try_from(i).unwrap(), &v, at(1.0))
            .unwrap();
    }
    let ids: Vec<u16> = published(&drain(&mut s))
        .iter()
        .map(|p| p.packet_id)
        .collect();
    assert_eq!(ids.len(), MAX_IN_FLIGHT);
    assert_eq!(ids[0], 1);
    assert!(!s.accepts_events(), "queue non-empty: stop pulling events");
    s.handle_packet(ClientPacket::PubAck(1), at(2.0)).unwrap();
    s.handle_packet(ClientPacket::PubAck(2), at(2.0)).unwrap();
    let more: Vec<u16> = published(&drain(&mut s))
        .iter()
        .map(|p| p.packet_id)
        .collect();
    assert_eq!(more.len(), 2);
    assert!(
        more.iter().all(|id| !ids[2..].contains(id)),
        "ids in use are skipped"
    );
    assert_eq!(s.in_flight(), MAX_IN_FLIGHT);
}

#[test]
fn a_client_that_never_acks_is_closed() {
    let mut s = subscribed_qos1();
    let v = json!({});
    s.desired_changed(1, &v, at(10.0)).unwrap();
    assert_eq!(s.poll_timeout(), Some(at(10.0 + 60.0)));
    // Keep-alive traffic does not excuse a missing PUBACK.
    s.handle_packet(ClientPacket::PingReq, at(69.0)).unwrap();
    assert_eq!(s.handle_timeout(at(70.0)), Err(Close::AckTimeout));

    let mut s = subscribed_qos1();
    for i in 0..MAX_IN_FLIGHT + MAX_QUEUED {
        s.desired_changed(i64::try_from(i).unwrap(), &v, at(1.0))
            .unwrap();
    }
    assert_eq!(s.desired_changed(999, &v, at(1.0)), Err(Close::Congested));
}

#[test]
fn second_connect_and_disconnect_end_the_session() {
    let mut s = session();
    let connect = crate::packet::Connect {
        level: 4,
        clean_session: false,
        keep_alive: 1,
        client_id: "dev1".into(),
        will: None,
        username: None,
        password: None,
    };
    assert!(matches!(
        s.handle_packet(ClientPacket::Connect(Box::new(connect)), at(1.0)),
        Err(Close::Protocol(_))
    ));
    assert_eq!(
        session().handle_packet(ClientPacket::Disconnect, at(1.0)),
        Err(Close::Disconnected)
    );
}

#[test]
fn restored_subscriptions_take_effect_without_subscribe() {
    let mut s = subscribed_qos1();
    s.desired_changed(3, &json!({"$version": 3}), at(1.0))
        .unwrap();
    assert_eq!(published(&drain(&mut s)).len(), 1);
}

#[test]
fn activity_is_reported_at_most_once_a_second() {
    let mut s = session();
    let count = |s: &mut Session| {
        std::iter::from_fn(|| s.poll_action())
            .filter(|a| *a == Action::Activity)
            .count()
    };
    s.handle_packet(ClientPacket::PingReq, at(1.0)).unwrap();
    assert_eq!(count(&mut s), 1);
    s.handle_packet(ClientPacket::PingReq, at(1.5)).unwrap();
    assert_eq!(count(&mut s), 0);
    s.handle_packet(ClientPacket::PingReq, at(2.0)).unwrap();
    assert_eq!(count(&mut s), 1);
}

#[test]
fn method_responses_are_acked_and_handed_over_and_own_telemetry_dropped() {
    let mut s = session();
    s.handle_packet(
        publish(
            "$iothub/methods/res/200/?$rid=1",
            QoS::AtLeastOnce,
            3,
            b"{}",
        ),
        at(1.0),
    )
    .unwrap();
    s.handle_packet(
        publish(
            "devices/dev1/messages/events/a=b",
            QoS::AtLeastOnce,
            4,
            b"hi",
        ),
        at(1.0),
    )
    .unwrap();
    assert_eq!(
        drain(&mut s),
        [
            Action::Send(ServerPacket::PubAck(3)),
            Action::MethodResponse {
                rid: "1".into(),
                status: 200,
                body: Bytes::from_static(b"{}"),
            },
            Action::Send(ServerPacket::PubAck(4))
        ]
    );
}

#[test]
fn a_method_answer_with_a_bad_status_is_acked_and_ignored() {
    let mut s = session();
    for (topic, qos, id) in [
        ("$iothub/methods/res/ok/?$rid=1", QoS::AtLeastOnce, 5),
        ("$iothub/methods/res//?$rid=2", QoS::AtMostOnce, 0),
    ] {
        s.handle_packet(publish(topic, qos, id, b"{}"), at(1.0))
            .unwrap();
    }
    assert_eq!(drain(&mut s), [Action::Send(ServerPacket::PubAck(5))]);
    // Any other unparsable topic still closes the connection.
    let bad = s.handle_packet(
        publish("$iothub/methods/POST/x/?$rid=1", QoS::AtMostOnce, 0, b""),
        at(1.0),
    );
    assert!(matches!(bad, Err(Close::ForbiddenTopic(_))), "{bad:?}");
}

#[test]
fn method_requests_reach_only_a_subscribed_session_at_qos_0() {
    let mut s = session();
    s.method_request("reboot", "1f", "{\"delay\":1}", at(1.0));
    assert_eq!(drain(&mut s), [], "not subscribed: dropped");
    s.handle_packet(
        subscribe(1, &[("$iothub/methods/POST/#", QoS::AtLeastOnce)]),
        at(1.0),
    )
    .unwrap();
    drain(&mut s);
    s.method_request("reboot", "1f", "{\"delay\":1}", at(2.0));
    let Some(Action::Send(ServerPacket::Publish(p))) = s.poll_action() else {
        panic!("no PUBLISH");
    };
    assert_eq!(p.topic, "$iothub/methods/POST/reboot/?$rid=1f");
    assert_eq!(p.qos, QoS::AtMostOnce, "method requests are QoS 0");
    assert_eq!(&p.payload[..], b"{\"delay\":1}");
    assert_eq!(s.in_flight(), 0);
    assert_eq!(drain(&mut s), []);
}

#[test]
fn module_sessions_use_their_own_filters() {
    let mut s = Session::new(
        SessionParams {
            identity: Identity {
                device_id: "d".into(),
                module_id: Some("m".into()),
            },
            keep_alive: 60,
            token_expiry: T0 + 10,
            subscriptions: Subscriptions::default(),
            tracking_id: 1,
        },
        at(0.0),
    );
    s.handle_packet(
        subscribe(1, &[("devices/d/modules/m/inputs/#", QoS::AtLeastOnce)]),
        at(1.0),
    )
    .unwrap();
    assert_eq!(s.subscriptions().module_inputs, Some(QoS::AtLeastOnce));
    assert!(s
        .handle_packet(
            subscribe(2, &[("devices/d/messages/devicebound/#", QoS::AtLeastOnce)]),
            at(1.0)
        )
        .is_err());
}
