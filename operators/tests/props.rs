//! Property tests of the event envelope: decoding any bytes or any JSON never panics (a bad
//! event is an error, never a crash), message parsing takes any JSON, and a valid event
//! survives encode → decode unchanged.

use operators::event::{Event, EventKind, Mode, parse_messages};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Any JSON value (no floats: they are checked separately; integers at their limits included).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Object-shaped JSON with the envelope's field names, so validation paths are reached.
fn envelope_like() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just("kind"),
        Just("cube_id"),
        Just("user_id"),
        Just("event_id"),
        Just("session_id"),
        Just("time"),
        Just("info"),
        Just("payload"),
        Just("messages"),
        Just("memory_ids"),
        Just("filter"),
        Just("version"),
        Just("mode"),
    ];
    btree_map(field, any_json(), 0..10)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn key_part() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,40}"
}

fn valid_event() -> impl Strategy<Value = Event> {
    (
        key_part(),
        key_part(),
        proptest::option::of(key_part()),
        proptest::option::of(key_part()),
        proptest::option::of(-62_135_596_800i64..253_402_300_799),
        vec("[a-z:]{1,12}", 0..4),
        btree_map("x_[a-z]{1,8}", prop_oneof![any::<i64>().prop_map(Value::from), ".{0,16}".prop_map(Value::String)], 0..4),
        vec((prop_oneof![Just("user"), Just("assistant")], ".{1,40}"), 1..5),
    )
        .prop_map(|(cube, user, session, event_id, secs, tags, info, msgs)| Event {
            version: operators::event::EVENT_VERSION,
            event_id,
            kind: EventKind::Messages,
            cube_id: cube,
            user_id: user,
            session_id: session,
            agent_id: None,
            app_id: None,
            time: secs.map(|s| store::time::micros_to_rfc3339(s * 1_000_000)),
            mode: Mode::Fast,
            tags,
            info: info.into_iter().collect::<Map<String, Value>>(),
            payload: json!({"messages": msgs.iter().map(|(r, c)| json!({"role": r, "content": c})).collect::<Vec<_>>()}),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoding_any_bytes_never_panics(bytes in vec(any::<u8>(), 0..600)) {
        let _ = Event::decode(&bytes, 4096);
    }

    #[test]
    fn decoding_any_envelope_never_panics(v in envelope_like()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        if let Ok(e) = Event::decode(&bytes, 1 << 20) {
            // What decodes is valid, and has an id.
            prop_assert!(e.validate().is_ok());
            prop_assert!(!e.id().is_empty());
        }
    }

    #[test]
    fn parsing_any_messages_never_panics(v in any_json()) {
        let _ = parse_messages(&v);
    }

    #[test]
    fn a_valid_event_round_trips(e in valid_event()) {
        let bytes = serde_json::to_vec(&e).unwrap();
        let d = Event::decode(&bytes, 1 << 20);
        prop_assert!(d.is_ok(), "{:?}", d.err());
        let d = d.unwrap();
        prop_assert_eq!(&d, &e);
        prop_assert_eq!(d.id(), e.id());
    }
}
