//! Keeps `docs/operations.md` complete: every config key and every metric family appears.

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
