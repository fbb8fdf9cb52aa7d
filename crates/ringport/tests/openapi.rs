//! Keeps `docs/openapi.yaml` true: the same routes and methods as [`ROUTES`] (which another
//! test checks against the router), and response schemas with the fields the types serialise.

use std::collections::BTreeSet;

use ringport::http::{
    ClusterScope, ConnectionCounts, ConnectionInfo, ConnectionState, GatewayStats, History,
    HistoryMessage, NodeCount, Presence, PresenceUser, PushOutcome, Receipts, RoomCount, RoomInfo,
    RoomList, RoomMember, ROUTES,
};
use serde_json::Value;

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml exists");
    serde_norway::from_str(&text).expect("docs/openapi.yaml is valid YAML")
}

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

#[test]
fn documented_routes_are_exactly_the_served_routes() {
    let spec = spec();
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in docs/openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in docs/openapi.yaml but not served: {extra:?}"
    );
}

#[test]
fn path_parameters_are_declared() {
    let spec = spec();
    let params = &spec["components"]["parameters"];
    for (method, path) in ROUTES {
        let op = &spec["paths"][*path][method.to_lowercase()];
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| match p["$ref"].as_str() {
                        Some(r) => params[r.rsplit('/').next().unwrap()]["name"].clone(),
                        None => p["name"].clone(),
                    })
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(
                    declared.contains(name),
                    "{method} {path}: parameter {name} not declared"
                );
            }
        }
    }
}

fn schema_keys(spec: &Value, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let schema = &spec["components"]["schemas"][name];
    let props = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("schema {name} has properties"))
        .keys()
        .cloned()
        .collect();
    let required = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (props, required)
}

fn fields(sample: impl serde::Serialize) -> BTreeSet<String> {
    let value = serde_json::to_value(sample).unwrap();
    value.as_object().unwrap().keys().cloned().collect()
}

fn check(spec: &Value, name: &str, sample: impl serde::Serialize) {
    let fields = fields(sample);
    check_optional(spec, name, fields.clone(), fields);
}

/// A schema with optional fields: `all` is a sample with every field present, `minimal`
/// one with only the always-present ones (the required list).
fn check_optional(spec: &Value, name: &str, all: BTreeSet<String>, minimal: BTreeSet<String>) {
    let (props, required) = schema_keys(spec, name);
    assert_eq!(
        all, props,
        "schema {name}: properties differ from the Rust type"
    );
    assert_eq!(
        minimal, required,
        "schema {name}: the always-present fields are exactly the required ones"
    );
}

#[test]
fn response_schemas_match_the_types() {
    let spec = spec();
    check_optional(
        &spec,
        "PushOutcome",
        fields(PushOutcome {
            recipients: Some(1),
            warning: Some("w".into()),
            ..PushOutcome::default()
        }),
        fields(PushOutcome::default()),
    );
    let scope = || {
        Some(ClusterScope {
            nodes: vec![NodeCount::default()],
            ..ClusterScope::default()
        })
    };
    check_optional(
        &spec,
        "RoomInfo",
        fields(RoomInfo {
            cluster: scope(),
            ..RoomInfo::default()
        }),
        fields(RoomInfo::default()),
    );
    check(&spec, "ClusterScope", ClusterScope::default());
    check(&spec, "NodeCount", NodeCount::default());
    check(&spec, "RoomList", RoomList::default());
    check(
        &spec,
        "RoomCount",
        RoomCount {
            room: "r".into(),
            online: 1,
        },
    );
    check(&spec, "History", History::default());
    check_optional(
        &spec,
        "HistoryMessage",
        fields(HistoryMessage {
            payload: Some("a".into()),
            payload_base64: Some("YQ==".into()),
            ..HistoryMessage::default()
        }),
        fields(HistoryMessage::default()),
    );
    check_optional(
        &spec,
        "Presence",
        fields(Presence {
            cluster: scope(),
            ..Presence::default()
        }),
        fields(Presence::default()),
    );
    check(
        &spec,
        "PresenceUser",
        PresenceUser {
            user: "u".into(),
            connections: 1,
        },
    );
    check(
        &spec,
        "RoomMember",
        RoomMember {
            connection: "1".into(),
            user: None,
        },
    );
    check_optional(
        &spec,
        "GatewayStats",
        fields(GatewayStats {
            cluster: scope(),
            ..GatewayStats::default()
        }),
        fields(GatewayStats::default()),
    );
    check(
        &spec,
        "Receipts",
        Receipts {
            user: "u1".into(),
            epoch: 1,
            tail: 0,
            acked_offset: 0,
            acked_count: 0,
        },
    );
    check(&spec, "ConnectionCounts", ConnectionCounts::default());
    check(
        &spec,
        "ConnectionInfo",
        ConnectionInfo {
            id: "1".into(),
            remote_addr: None,
            user: None,
            rooms: vec![],
            state: ConnectionState::Active,
            connected_since_ms: 0,
            last_activity_ms: 0,
            bytes_in: 0,
            bytes_out: 0,
            messages_in: 0,
            messages_out: 0,
            queued_bytes: 0,
        },
    );
    let states: BTreeSet<String> = spec["components"]["schemas"]["ConnectionInfo"]["properties"]
        ["state"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let served: BTreeSet<String> = [
        ConnectionState::Handshaking,
        ConnectionState::Active,
        ConnectionState::Sleeping,
        ConnectionState::Closing,
    ]
    .iter()
    .map(|s| {
        serde_json::to_value(s)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    })
    .collect();
    assert_eq!(states, served);
}

#[test]
fn push_body_schema_lists_the_accepted_fields() {
    let spec = spec();
    let (props, _) = schema_keys(&spec, "PushBody");
    let expected: BTreeSet<String> = ["payload", "payload_base64", "urgent"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(props, expected);
}

#[test]
fn batch_item_schema_lists_the_accepted_fields() {
    let spec = spec();
    let (props, _) = schema_keys(&spec, "BatchItem");
    let expected: BTreeSet<String> = [
        "room",
        "user",
        "broadcast",
        "payload",
        "payload_base64",
        "urgent",
        "idempotency_key",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(props, expected);
}
