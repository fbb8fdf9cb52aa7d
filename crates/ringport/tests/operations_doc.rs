//! Keeps `docs/operations.md` true: every config key with its default, and every metric
//! family with its type, unit, labels and HELP, as a running gateway serves them.

mod common;

use common::gateway::{test_config, TestServer};
use ringport::config::KEYS;
use ringport::metrics::Registry;

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
    std::fs::read_to_string(path).expect("docs/operations.md exists")
}

#[test]
fn every_config_key_is_documented() {
    let doc = doc();
    for k in KEYS {
        let env = format!(
            "`RINGPORT_{}__{}`",
            k.section.to_uppercase(),
            k.key.to_uppercase()
        );
        assert!(
            doc.contains(&env),
            "docs/operations.md lacks {}.{} ({env})",
            k.section,
            k.key
        );
        assert!(
            doc.contains(k.doc),
            "docs/operations.md has a stale description of {}.{}",
            k.section,
            k.key
        );
    }
}

#[test]
fn every_metric_family_is_documented() {
    let doc = doc();
    let mut text = String::new();
    Registry::new(1).0.render(&mut text);
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                doc.contains(&format!("| `{name}` |")),
                "docs/operations.md lacks metric {name}"
            );
        }
    }
}

/// Cells of every row of every table in `text` whose header starts with `header`.
fn table_rows(text: &str, header: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut lines = text.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        if !line.starts_with(header) {
            continue;
        }
        lines.next(); // separator
        while let Some(row) = lines.next_if(|l| l.starts_with('|')) {
            rows.push(
                row.trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_owned())
                    .collect(),
            );
        }
    }
    rows
}

#[test]
fn key_tables_state_the_config_defaults() {
    let doc = doc();
    let defaults = toml::Table::try_from(ringport::config::Config::default()).unwrap();
    let mut checked = 0;
    for row in table_rows(&doc, "| key | default | environment variable |") {
        let (key, documented, env) = (row[0].trim_matches('`'), &row[1], &row[2]);
        let section = env
            .trim_matches('`')
            .strip_prefix("RINGPORT_")
            .and_then(|e| e.split_once("__"))
            .map(|(s, _)| s.to_lowercase())
            .unwrap_or_else(|| panic!("row {row:?} names its variable"));
        let actual = defaults
            .get(&section)
            .and_then(|s| s.get(key))
            .map_or("unset".to_owned(), |v| format!("`{v}`"));
        assert_eq!(
            documented, &actual,
            "docs/operations.md: default of {section}.{key}"
        );
        checked += 1;
    }
    assert_eq!(checked, KEYS.len(), "one row per key");
}

/// One family as `/metrics` shows it.
#[derive(Debug, Default)]
struct Scraped {
    kind: String,
    help: String,
    /// label name -> values seen (without `le`).
    labels: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Finite `le` bounds, for histograms.
    bounds: Vec<f64>,
}

fn scrape(text: &str) -> std::collections::BTreeMap<String, Scraped> {
    let mut families: std::collections::BTreeMap<String, Scraped> = Default::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            families.entry(name.to_owned()).or_default().help = help.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
        } else {
            let (series, _value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| families.get(*f).is_some_and(|f| f.kind == "histogram"))
                })
                .unwrap_or(name);
            let f = families
                .get_mut(family)
                .unwrap_or_else(|| panic!("sample {line:?} before its # TYPE"));
            for pair in labels
                .trim_end_matches('}')
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair.split_once('=').unwrap();
                let v = v.trim_matches('"');
                if k == "le" {
                    if v != "+Inf" {
                        f.bounds.push(v.parse().unwrap());
                    }
                } else {
                    f.labels
                        .entry(k.to_owned())
                        .or_default()
                        .insert(v.to_owned());
                }
            }
        }
    }
    families
}

#[test]
fn scraped_metrics_match_the_metrics_table() {
    let server = TestServer::start(test_config());
    let body = server.http("GET", "/metrics", "").body;
    let scraped = scrape(&body);
    let doc = doc();
    let rows = table_rows(&doc, "| family | type | unit | labels |");
    let mut documented = std::collections::BTreeSet::new();
    for row in &rows {
        let [family, kind, unit, labels, help] = &row[..] else {
            panic!("metrics table row {row:?} has five cells");
        };
        let name = family.trim_matches('`');
        documented.insert(name.to_owned());
        let f = scraped
            .get(name)
            .unwrap_or_else(|| panic!("{name} is documented but /metrics lacks it"));
        assert_eq!(&f.kind, kind, "{name}: type");
        assert_eq!(&f.help, help, "{name}: HELP text vs the table's meaning");
        // Units: seconds and bytes are in the name (Prometheus convention), and a
        // histogram's bounds are in its unit.
        for u in ["seconds", "bytes"] {
            assert_eq!(
                unit == u,
                name.contains(&format!("_{u}")),
                "{name}: unit {unit:?} and name disagree"
            );
        }
        if kind == "histogram" {
            assert!(!f.bounds.is_empty(), "{name} has buckets");
            if unit == "seconds" {
                assert!(
                    f.bounds.iter().all(|b| (1e-6..=60.0).contains(b)),
                    "{name}: le bounds are not seconds: {:?}",
                    f.bounds
                );
            } else {
                assert!(
                    f.bounds.iter().all(|b| b.fract() == 0.0 && *b >= 1.0),
                    "{name}: le bounds are not whole {unit}: {:?}",
                    f.bounds
                );
            }
        }
        // Labels: `name` = value, value, ... (values listed unless they are open-ended);
        // several labels separated by "; ".
        let mut want: std::collections::BTreeMap<
            String,
            Option<std::collections::BTreeSet<String>>,
        > = Default::default();
        for labels in labels.split("; ").filter(|l| !l.is_empty()) {
            let (label, values) = labels.split_once(" = ").unwrap_or((labels, ""));
            let values =
                (!values.is_empty()).then(|| values.split(", ").map(str::to_owned).collect());
            want.insert(label.trim_matches('`').to_owned(), values);
        }
        assert_eq!(
            f.labels.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{name}: label names"
        );
        for (label, values) in want {
            if let Some(values) = values {
                assert_eq!(f.labels[&label], values, "{name}: values of {label}");
            }
        }
    }
    let undocumented: Vec<_> = scraped
        .keys()
        .filter(|n| !documented.contains(*n))
        .collect();
    assert!(
        undocumented.is_empty(),
        "/metrics has families docs/operations.md lacks: {undocumented:?}"
    );
}
