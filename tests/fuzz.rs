//! Property tests ("fuzzing" with proptest) of the two parsers that read untrusted input: the
//! viewer's JSON messages and join tokens. Whatever arrives, they return a value or an error and
//! never panic; a token that verifies is exactly one the server minted.
//!
//! CI runs the default number of cases (256 per property). For a longer run:
//! `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cobrowse::capability::{self, Claims, Secret};
use cobrowse::protocol::parse_client_message;
use cobrowse::session::Role;
use proptest::prelude::*;

fn secret() -> Secret {
    Secret::new(b"a fixed secret for property tests, 32+ bytes".to_vec()).expect("long enough")
}

/// JSON values shaped like viewer messages: known and unknown `t`, fields of every type.
fn message_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let kinds = prop::sample::select(vec![
        "ack", "resync", "mouse", "wheel", "key", "text", "compose", "chat", "name", "remove",
        "end", "control", "annotate", "navigate", "history", "tab", "pick", "choose", "dialog",
        "viewport", "pointer", "nope", "",
    ]);
    let fields = prop::collection::btree_map(
        prop::sample::select(vec![
            "type", "x", "y", "button", "key", "code", "text", "id", "action", "url", "accept",
            "index", "value", "width", "height", "seq", "dx", "dy", "points", "kind", "policy",
        ]),
        value,
        0..8,
    );
    (kinds, fields).prop_map(|(t, fields)| {
        let mut object: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        object.insert("t".into(), t.into());
        serde_json::Value::Object(object).to_string()
    })
}

proptest! {
    #[test]
    fn any_text_is_parsed_or_refused(text in ".{0,300}") {
        let _ = parse_client_message(&text);
    }

    #[test]
    fn message_shaped_json_is_parsed_or_refused(text in message_like()) {
        let _ = parse_client_message(&text);
    }

    #[test]
    fn any_token_is_refused_unless_minted(token in "[a-zA-Z0-9._-]{0,300}") {
        prop_assert!(capability::verify(&secret(), &token, SystemTime::now()).is_err());
    }

    #[test]
    fn token_shaped_strings_are_refused(
        session in "[a-zA-Z0-9_-]{0,70}",
        link in "[a-zA-Z0-9_-]{0,70}",
        role in "[a-z]{0,2}",
        expires in "[0-9]{0,14}",
        tag in "[a-zA-Z0-9_-]{0,50}",
    ) {
        let token = format!("cb1.{session}.{link}.{role}.{expires}.{tag}");
        prop_assert!(capability::verify(&secret(), &token, SystemTime::now()).is_err());
    }

    #[test]
    fn minted_tokens_verify_and_any_change_breaks_them(
        session in "[a-zA-Z0-9_-]{1,24}",
        link in "[a-zA-Z0-9_-]{1,16}",
        role in prop::sample::select(vec![Role::Owner, Role::Controller, Role::Viewer]),
        ttl in 1u64..10_000_000,
        position in any::<prop::sample::Index>(),
        replacement in "[a-zA-Z0-9._-]",
    ) {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let claims = Claims { session, link, role, expires: 1_800_000_000 + ttl };
        let token = capability::mint(&secret(), &claims);
        prop_assert_eq!(capability::verify(&secret(), &token, now), Ok(claims));
        let i = position.index(token.len());
        let mut changed = token.clone();
        changed.replace_range(i..=i, &replacement);
        if changed != token {
            prop_assert!(capability::verify(&secret(), &changed, now).is_err(), "{}", changed);
        }
    }
}
