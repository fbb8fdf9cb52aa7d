//! docs/protocol.md states the server's defaults (section 11's table, the prose of sections
//! 1, 6, 7 and 8); the gateway's `Config::default()` (what `ringport config default` prints)
//! and its WELCOME must say the same numbers.

mod common;

use common::gateway::{test_config, TestServer};
use ringport::config::Config;
use ringport::gateway::session_config;

fn protocol_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md exists")
}

/// `text` with every run of whitespace (line breaks included) as one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of the section whose heading starts with `heading`, up to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("protocol.md has no {heading:?}"));
    let rest = &doc[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// Cells of every body row of the first table in `text`.
fn table_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The first number in `text`, digits grouped with spaces or commas allowed ("65 536").
fn first_number(text: &str) -> Option<u64> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ' ' || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `section.key` of the default config, as an integer.
fn default_of(key: &str) -> u64 {
    let table = toml::Table::try_from(Config::default()).unwrap();
    let (section, name) = key.split_once('.').unwrap();
    table
        .get(section)
        .and_then(|s| s.get(name))
        .and_then(toml::Value::as_integer)
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{key} is not an integer key of Config"))
}

#[test]
fn section_11_table_matches_the_config_defaults() {
    let doc = protocol_md();
    let rows = table_rows(section(&doc, "## 11."));
    assert!(rows.len() >= 10, "section 11 has its table: {rows:?}");
    let mut keys = Vec::new();
    for row in &rows {
        let [setting, default, key] = &row[..] else {
            panic!("section 11 row {row:?} has three cells");
        };
        if key.is_empty() {
            assert_eq!(
                setting, "room name / user id",
                "only the name rule has no key"
            );
            assert_eq!(
                first_number(&default[3..]),
                Some(ringport_proto::MAX_NAME_LEN as u64)
            );
            continue;
        }
        let key = key.trim_matches('`');
        let documented = first_number(default).unwrap_or_else(|| panic!("{row:?}"));
        assert_eq!(
            documented,
            default_of(key),
            "protocol.md section 11 says {setting} = {default}, Config::default() has {key} = {}",
            default_of(key)
        );
        keys.push(key.to_owned());
    }
    // Every [protocol] key is in the table.
    let table = toml::Table::try_from(Config::default()).unwrap();
    for key in table["protocol"].as_table().unwrap().keys() {
        assert!(
            keys.contains(&format!("protocol.{key}")),
            "protocol.{key} is missing from protocol.md section 11"
        );
    }
}

#[test]
fn prose_defaults_name_their_key_and_match_it() {
    // Every "`section.key`, default N" in the text (sections 1, 6, 7, 8 cite them this way).
    let doc = one_line(&protocol_md());
    let mut checked = 0;
    for (i, _) in doc.match_indices("`, default ") {
        let open = doc[..i].rfind('`').unwrap();
        let key = &doc[open + 1..i];
        if !key.contains('.') {
            continue;
        }
        let n = first_number(&doc[i + 11..]).unwrap();
        assert_eq!(
            n,
            default_of(key),
            "protocol.md says `{key}`, default {n}; Config::default() differs"
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "the prose cites its defaults with their keys ({checked})"
    );
}

/// The heartbeat schedule of the default config, in the words protocol.md and operations.md
/// use: "the server probes at 90, 100 and 110 s and closes at 120 s".
fn default_schedule_sentence() -> String {
    let s = session_config(&Config::default());
    let interval = u64::from(s.heartbeat_interval_ms);
    let every = interval / u64::from(s.probe_divisor);
    let close = interval * u64::from(s.close_after_misses);
    let probes: Vec<String> = (0..)
        .map(|k| interval * u64::from(s.tolerated_misses + 1) + k * every)
        .take_while(|t| *t < close)
        .map(|t| (t / 1000).to_string())
        .collect();
    let (last, rest) = probes.split_last().unwrap();
    format!(
        "the server probes at {} and {last} s and closes at {} s",
        rest.join(", "),
        close / 1000
    )
}

#[test]
fn heartbeat_schedule_in_the_docs_is_the_default_one() {
    let sentence = default_schedule_sentence();
    let protocol = one_line(&protocol_md());
    assert!(
        protocol.contains(&sentence),
        "protocol.md section 7 lacks {sentence:?}"
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
    let ops = one_line(&std::fs::read_to_string(path).unwrap());
    assert!(ops.contains(&sentence), "operations.md lacks {sentence:?}");
}

#[test]
fn welcome_announces_the_documented_defaults() {
    // The shipped defaults, only moved to loopback port 0 (and a small test engine).
    let mut config = test_config();
    config.protocol = Config::default().protocol;
    config.rooms = Config::default().rooms;
    let server = TestServer::start(config);
    let w = server.client().welcome("");
    let doc = protocol_md();
    let rows = table_rows(section(&doc, "## 11."));
    let documented = |setting: &str| {
        let row = rows
            .iter()
            .find(|r| r[0] == setting)
            .unwrap_or_else(|| panic!("section 11 has {setting:?}"));
        first_number(&row[1]).unwrap()
    };
    assert_eq!(
        u64::from(w.heartbeat_interval_ms),
        documented("heartbeat interval")
    );
    assert_eq!(
        u64::from(w.max_sleep_interval_ms),
        documented("max sleep interval")
    );
    assert_eq!(u64::from(w.max_payload), documented("max payload"));
    assert_eq!(u64::from(w.max_rooms), documented("max rooms"));
}
