use super::*;
use serde_json::json;

fn sample() -> Value {
    json!({
        "zeta": 1, "alpha": {"y": [1, -2, 3.5, "s", null, true, {"k": "v"}], "x": {}},
        "long": "a string well over twenty-four bytes long", "": "", "n": null,
        "big": 18446744073709551615u64, "neg": -9223372036854775808i64, "f": 1e300
    })
}

#[test]
fn round_trips_through_value_and_text_keeping_order() {
    let value = sample();
    let node = Node::from_value(value.clone());
    assert_eq!(node.to_value(), value);
    assert_eq!(node, value);
    let text = serde_json::to_string(&value).unwrap();
    assert_eq!(serde_json::to_string(&node).unwrap(), text);
    let decoded: Node = serde_json::from_str(&text).unwrap();
    assert_eq!(decoded.to_value(), value);
    let Value::Object(map) = &value else {
        unreachable!()
    };
    let object: Object = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = object.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, map.keys().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(object.to_map(), *map);
    assert_eq!(object, *map);
}

#[test]
fn repeated_keys_decode_like_a_map() {
    for n in [3, 40] {
        let mut text = String::from("{");
        for i in 0..n {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k1\":\"last\",\"k0\":{\"a\":1,\"a\":2}}");
        let want: Value = serde_json::from_str(&text).unwrap();
        let got: Object = serde_json::from_str(&text).unwrap();
        assert_eq!(Value::Object(got.to_map()), want);
        let got_keys: Vec<&str> = got.iter().map(|(k, _)| k).collect();
        let want_keys: Vec<&str> = want
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(got_keys, want_keys);
    }
}

#[test]
fn equality_ignores_member_order_like_a_map() {
    let a = Object::from_map(json!({"a": 1, "b": 2}).as_object().unwrap().clone());
    let b = Object::from_map(json!({"b": 2, "a": 1}).as_object().unwrap().clone());
    let c = Object::from_map(json!({"b": 2, "a": 3}).as_object().unwrap().clone());
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn only_objects_decode_as_objects_and_nonfinite_is_refused() {
    assert!(serde_json::from_str::<Object>("[1]").is_err());
    assert!(serde_json::from_str::<Node>("NaN").is_err());
}

#[test]
fn nodes_stay_small() {
    assert!(std::mem::size_of::<Node>() <= 32);
    assert!(std::mem::size_of::<(CompactString, Node)>() <= 56);
}
