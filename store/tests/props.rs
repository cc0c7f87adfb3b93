//! Property tests of the store's parsers and codecs: the filter parser and time parser take
//! any input without panicking, times and records round-trip, any bytes decode to a record or
//! an error, and the scope layer (what SQL, REST and the bus read through) sees exactly the
//! memories whose cube and user its patterns cover.

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;
use store::filter::Filter;
use store::time::{MAX_MICROS, MIN_MICROS, micros_to_rfc3339, parse_time};
use store::{MemoryRecord, MemoryType, Scope, Status, Store, StoreOptions};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("user_id".to_string()),
            Just("created_at".to_string()),
            Just("and".to_string()),
            Just("or".to_string()),
            Just("not".to_string()),
            Just("gte".to_string()),
            Just("in".to_string()),
            Just("like".to_string()),
            ".{0,16}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(
                prop_oneof![
                    Just("and".to_string()),
                    Just("or".to_string()),
                    Just("not".to_string()),
                    Just("user_id".to_string()),
                    Just("created_at".to_string()),
                    Just("tags".to_string()),
                    Just("gte".to_string()),
                    Just("in".to_string()),
                    Just("contains".to_string()),
                    Just("like".to_string()),
                    "[a-z_.]{1,10}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn record(id: String, user: String, text: String, conf: f32, t: i64) -> MemoryRecord {
    MemoryRecord {
        id,
        memory: text,
        cube_id: "c".into(),
        user_id: user,
        session_id: "s".into(),
        agent_id: None,
        app_id: None,
        memory_type: MemoryType::UserMemory,
        status: Status::Activated,
        key: None,
        tags: vec!["t".into()],
        info: serde_json::Map::new(),
        source: None,
        sources: vec![],
        confidence: conf,
        created_at: t,
        updated_at: t,
        event_time: Some(t),
        version: 1,
        history: vec![],
        event_id: "e".into(),
        file_ids: vec![],
        embedding: vec![],
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_filter_parses_or_errs_and_evaluates_without_panicking(v in any_json()) {
        let r = record("i".into(), "u".into(), "text".into(), 0.5, 1_700_000_000_000_000);
        if let Ok(f) = Filter::parse(&v) {
            let _ = f.matches(&r);
        }
        let _ = Filter::parse_for_cube(&v, "c", &["c".to_string(), "d".to_string()]);
    }

    #[test]
    fn any_text_parses_as_a_time_in_range_or_not_at_all(s in ".{0,40}") {
        if let Some(t) = parse_time(&s) {
            prop_assert!((MIN_MICROS..=MAX_MICROS).contains(&t));
        }
    }

    #[test]
    fn digit_strings_at_any_size_never_overflow(s in "[+-]?[0-9]{1,40}") {
        if let Some(t) = parse_time(&s) {
            prop_assert!((MIN_MICROS..=MAX_MICROS).contains(&t));
        }
    }

    #[test]
    fn times_round_trip(t in MIN_MICROS..=MAX_MICROS) {
        prop_assert_eq!(parse_time(&micros_to_rfc3339(t)), Some(t));
    }

    #[test]
    fn records_round_trip(id in ".{1,40}", user in ".{0,20}", text in ".{0,200}",
                          conf in any::<f32>().prop_filter("finite", |f| f.is_finite()),
                          t in any::<i64>()) {
        let r = record(id, user, text, conf, t);
        let back = MemoryRecord::decode(&r.encode().unwrap()).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn any_bytes_decode_to_a_record_or_an_error(bytes in vec(any::<u8>(), 0..300)) {
        let _ = MemoryRecord::decode(&bytes);
        let _ = MemoryRecord::decode_v1(&bytes);
    }
}

fn user_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        Just("al*".to_string()),
        Just("alice".to_string()),
        Just("bob".to_string()),
        Just("".to_string()),
        Just("c*".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_scope_layer_sees_exactly_what_its_patterns_cover(
        users in vec(prop_oneof![Just("alice"), Just("albert"), Just("bob"), Just("carol"), Just("")], 1..30),
        patterns in vec(user_pattern(), 1..3),
        cube_patterns in vec(prop_oneof![Just("*".to_string()), Just("c".to_string()), Just("d*".to_string())], 1..2),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), StoreOptions { dimensions: 4, ..Default::default() }).unwrap();
        let mut w = s.write_txn().unwrap();
        for (i, u) in users.iter().enumerate() {
            let r = record(format!("m{i}"), u.to_string(), format!("memory {i}"), 1.0, 1);
            s.insert(&mut w, &r, &[1.0, 0.0, 0.0, 0.0]).unwrap();
        }
        s.commit(w).unwrap();
        let scope = Scope::new(&cube_patterns, &patterns);
        let txn = s.read_txn().unwrap();
        let all = s.cube_ids(&txn, "c").unwrap();
        let seen = s.restrict(&txn, "c", &scope, all.clone()).unwrap();
        for id in &all {
            let r = s.record(&txn, id).unwrap().unwrap();
            prop_assert_eq!(seen.contains(id), scope.sees(&r), "{:?} {:?}", r.user_id, scope);
        }
        let matched = s.matching_ids(&txn, "c", &Filter::True, &scope).unwrap();
        prop_assert_eq!(matched.len() as u64, seen.len());
    }
}
