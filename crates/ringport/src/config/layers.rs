//! Merging the four configuration layers (defaults < file < environment < flags).
//!
//! Every layer is turned into `(section, key, toml::Value)` assignments, each checked against
//! the key table so a typo or a wrong type is reported with the key and where it came from.

use std::path::{Path, PathBuf};

use super::keys::{find, KeyKind};
use super::{Config, ConfigError};

/// One `section.key = value` assignment from a string source (environment or flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// `section.key`.
    pub key: String,
    /// The raw string; parsed according to the key's kind.
    pub value: String,
    /// Where it came from, for error messages (e.g. `flag --workers`).
    pub origin: String,
}

impl Override {
    /// Parses the `section.key=value` syntax of `--set`.
    pub fn parse_set(arg: &str) -> Result<Override, ConfigError> {
        let (key, value) = arg.split_once('=').ok_or_else(|| ConfigError::BadValue {
            origin: "flag --set".into(),
            key: arg.into(),
            value: arg.into(),
            expected: "section.key=value",
        })?;
        Ok(Override {
            key: key.trim().to_owned(),
            value: value.to_owned(),
            origin: format!("flag --set {}", key.trim()),
        })
    }
}

/// The inputs to configuration resolution; build it, then call [`Layers::resolve`].
#[derive(Debug, Default, Clone)]
pub struct Layers {
    file: Option<PathBuf>,
    file_text: Option<(String, String)>,
    env: Vec<(String, String)>,
    flags: Vec<Override>,
}

impl Layers {
    pub fn new() -> Layers {
        Layers::default()
    }

    /// Reads this TOML file as the second layer.
    pub fn file(mut self, path: impl AsRef<Path>) -> Layers {
        self.file = Some(path.as_ref().to_owned());
        self
    }

    /// Uses this text as the file layer (tests, `config check` from stdin).
    pub fn file_text(mut self, name: &str, text: &str) -> Layers {
        self.file_text = Some((name.to_owned(), text.to_owned()));
        self
    }

    /// The process environment (pass `std::env::vars()`); only `RINGPORT_*` and `RUST_LOG` are read.
    pub fn env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Layers {
        self.env = vars.into_iter().collect();
        self
    }

    /// A command-line override; later ones win.
    pub fn flag(mut self, key: &str, value: impl ToString, flag_name: &str) -> Layers {
        self.flags.push(Override {
            key: key.to_owned(),
            value: value.to_string(),
            origin: format!("flag {flag_name}"),
        });
        self
    }

    /// Adds parsed `--set` overrides.
    pub fn overrides(mut self, overrides: impl IntoIterator<Item = Override>) -> Layers {
        self.flags.extend(overrides);
        self
    }

    /// Merges all layers and validates the result.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let config = self.merge()?;
        config.validate()?;
        Ok(config)
    }

    /// Merges all layers without the cross-key validation of [`Config::validate`].
    pub fn merge(&self) -> Result<Config, ConfigError> {
        let mut table = toml::Table::try_from(Config::default())
            .map_err(|e| ConfigError::Merged(e.to_string()))?;

        let file = match (&self.file, &self.file_text) {
            (_, Some((name, text))) => Some((name.clone(), text.clone())),
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Some((path.display().to_string(), text))
            }
            (None, None) => None,
        };
        if let Some((name, text)) = file {
            merge_file(&mut table, &name, &text)?;
        }

        for o in env_overrides(&self.env)? {
            apply(&mut table, &o)?;
        }
        for o in &self.flags {
            apply(&mut table, o)?;
        }
        Config::deserialize_table(table)
    }
}

impl Config {
    fn deserialize_table(table: toml::Table) -> Result<Config, ConfigError> {
        // Serialise then parse: toml's deserializer reports errors with the key's path.
        let text = toml::to_string(&table).map_err(|e| ConfigError::Merged(e.to_string()))?;
        toml::from_str(&text).map_err(|e| ConfigError::Merged(e.message().to_owned()))
    }
}

fn merge_file(table: &mut toml::Table, name: &str, text: &str) -> Result<(), ConfigError> {
    let origin = format!("config file {name}");
    let parsed: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: name.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    for (section, body) in parsed {
        let known_section = super::keys::KEYS.iter().any(|d| d.section == section);
        let Some(body) = body.as_table().filter(|_| known_section) else {
            return Err(ConfigError::UnknownKey {
                origin,
                key: section,
            });
        };
        for (key, value) in body {
            let full = format!("{section}.{key}");
            let doc = find(&section, key).ok_or_else(|| ConfigError::UnknownKey {
                origin: origin.clone(),
                key: full.clone(),
            })?;
            let value =
                check_typed(doc.kind, value.clone()).map_err(|expected| ConfigError::BadValue {
                    origin: origin.clone(),
                    key: full.clone(),
                    value: value.to_string(),
                    expected,
                })?;
            set(table, &section, key, value);
        }
    }
    Ok(())
}

/// Environment variables as overrides, weakest first: aliases, then canonical names.
fn env_overrides(vars: &[(String, String)]) -> Result<Vec<Override>, ConfigError> {
    let mut aliases = Vec::new();
    let mut canonical = Vec::new();
    for (name, value) in vars {
        let origin = format!("environment variable {name}");
        if name == "RUST_LOG" {
            aliases.push(Override {
                key: "log.level".into(),
                value: value.clone(),
                origin,
            });
        } else if name == "RINGPORT_AUTH_SECRET" {
            aliases.push(Override {
                key: "auth.secret".into(),
                value: value.clone(),
                origin,
            });
        } else if let Some(rest) = name.strip_prefix("RINGPORT_") {
            if let Some((section, key)) = rest.split_once("__") {
                canonical.push(Override {
                    key: format!("{}.{}", section.to_lowercase(), key.to_lowercase()),
                    value: value.clone(),
                    origin,
                });
            } else if let Some(hint) = single_underscore_typo(rest) {
                // Names without `__` (e.g. RINGPORT_CONFIG) are not config keys, but one that
                // starts with a section name almost certainly meant to be.
                return Err(ConfigError::UnknownKey { origin, key: hint });
            }
        }
    }
    aliases.extend(canonical);
    Ok(aliases)
}

/// `ENGINE_RING_ENTRIES` -> a hint naming `RINGPORT_ENGINE__RING_ENTRIES`.
fn single_underscore_typo(rest: &str) -> Option<String> {
    let lower = rest.to_lowercase();
    super::keys::KEYS.iter().find_map(|d| {
        (lower == format!("{}_{}", d.section, d.key)).then(|| {
            format!(
                "{}.{} (write RINGPORT_{}__{} with a double underscore)",
                d.section,
                d.key,
                d.section.to_uppercase(),
                d.key.to_uppercase()
            )
        })
    })
}

fn apply(table: &mut toml::Table, o: &Override) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        origin: o.origin.clone(),
        key: o.key.clone(),
    };
    let (section, key) = o.key.split_once('.').ok_or_else(unknown)?;
    let doc = find(section, key).ok_or_else(unknown)?;
    let value = parse_string(doc.kind, &o.value).map_err(|expected| ConfigError::BadValue {
        origin: o.origin.clone(),
        key: o.key.clone(),
        value: o.value.clone(),
        expected,
    })?;
    set(table, section, key, value);
    Ok(())
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let Some(t) = entry.as_table_mut() {
        t.insert(key.to_owned(), value);
    }
}

/// Parses a string from the environment or a flag into a value of the key's kind.
fn parse_string(kind: KeyKind, raw: &str) -> Result<toml::Value, &'static str> {
    let raw_trimmed = raw.trim();
    match kind {
        KeyKind::Int => raw_trimmed
            .replace('_', "")
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .map(toml::Value::Integer)
            .ok_or(kind.describe()),
        KeyKind::Bool => match raw_trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(kind.describe()),
        },
        KeyKind::Str => Ok(toml::Value::String(raw.to_owned())),
        KeyKind::Addr | KeyKind::Enum(_) => {
            check_typed(kind, toml::Value::String(raw_trimmed.to_owned()))
        }
    }
}

/// Checks an already-typed TOML value (from the file) against the key's kind.
fn check_typed(kind: KeyKind, value: toml::Value) -> Result<toml::Value, &'static str> {
    let ok = match (&kind, &value) {
        (KeyKind::Int, toml::Value::Integer(v)) => *v >= 0,
        (KeyKind::Bool, toml::Value::Boolean(_)) => true,
        (KeyKind::Str, toml::Value::String(_)) => true,
        (KeyKind::Addr, toml::Value::String(s)) => s.parse::<std::net::SocketAddr>().is_ok(),
        (KeyKind::Enum(words), toml::Value::String(s)) => words.contains(&s.as_str()),
        _ => false,
    };
    if ok {
        Ok(value)
    } else if let KeyKind::Enum(words) = kind {
        Err(match words {
            ["gateway", "echo"] => "\"gateway\" or \"echo\"",
            ["text", "json"] => "\"text\" or \"json\"",
            _ => kind.describe(),
        })
    } else {
        Err(kind.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppMode, LogFormat};

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn no_layers_gives_defaults() {
        assert_eq!(Layers::new().resolve().unwrap(), Config::default());
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let file = "[engine]\nring_entries = 1024\nrecv_buffers = 512\nsend_high_water = 2000000\n\
                    [server]\nworkers = 2\n";
        let layers = Layers::new()
            .file_text("test.toml", file)
            .env(env(&[
                ("RINGPORT_ENGINE__RECV_BUFFERS", "256"),
                ("RINGPORT_SERVER__WORKERS", "3"),
                ("RINGPORT_LOG__FORMAT", "json"),
                ("UNRELATED", "x"),
                ("RINGPORT_CONFIG", "/ignored.toml"),
            ]))
            .flag("server.workers", 4, "--workers");
        let c = layers.resolve().unwrap();
        assert_eq!(c.engine.ring_entries, 1024, "file beats default");
        assert_eq!(c.engine.send_high_water, 2_000_000);
        assert_eq!(c.engine.recv_buffers, 256, "env beats file");
        assert_eq!(c.server.workers, 4, "flag beats env");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(
            c.engine.max_connections_per_shard, 65_536,
            "untouched default"
        );
    }

    #[test]
    fn aliases_are_weaker_than_canonical_names() {
        let secret_a = "a".repeat(32);
        let secret_b = "b".repeat(32);
        let c = Layers::new()
            .env(env(&[
                ("RINGPORT_AUTH_SECRET", &secret_a),
                ("RUST_LOG", "debug"),
            ]))
            .resolve()
            .unwrap();
        assert_eq!(c.auth.secret.as_deref(), Some(secret_a.as_str()));
        assert_eq!(c.log.level, "debug");
        let c = Layers::new()
            .env(env(&[
                ("RINGPORT_AUTH__SECRET", &secret_b),
                ("RINGPORT_AUTH_SECRET", &secret_a),
                ("RINGPORT_LOG__LEVEL", "warn"),
                ("RUST_LOG", "debug"),
            ]))
            .resolve()
            .unwrap();
        assert_eq!(c.auth.secret.as_deref(), Some(secret_b.as_str()));
        assert_eq!(c.log.level, "warn");
    }

    #[test]
    fn single_underscore_is_caught() {
        let e = Layers::new()
            .env(env(&[("RINGPORT_ENGINE_RING_ENTRIES", "8")]))
            .resolve()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("RINGPORT_ENGINE__RING_ENTRIES with a double underscore"),
            "{e}"
        );
        // Not a key at all: ignored (other tools may use RINGPORT_* names).
        Layers::new()
            .env(env(&[("RINGPORT_BENCH_CLIENTS", "8")]))
            .resolve()
            .unwrap();
    }

    #[test]
    fn set_flag_reaches_every_key() {
        let o = Override::parse_set("server.app=echo").unwrap();
        let c = Layers::new().overrides([o]).resolve().unwrap();
        assert_eq!(c.server.app, AppMode::Echo);
        let c = Layers::new()
            .overrides([Override::parse_set("engine.idle_timeout_ms=60_000").unwrap()])
            .resolve()
            .unwrap();
        assert_eq!(c.engine.idle_timeout_ms, 60_000);
        assert!(Override::parse_set("novalue").is_err());
    }

    #[test]
    fn errors_name_key_and_origin() {
        let e = Layers::new()
            .file_text("f.toml", "[engine]\nring_entrys = 5\n")
            .resolve()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "config file f.toml: unknown config key `engine.ring_entrys`"
        );
        let e = Layers::new()
            .file_text("f.toml", "[server]\nlisten = \"nope\"\n")
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("server.listen"), "{e}");
        let e = Layers::new()
            .env(env(&[("RINGPORT_SERVER__WORKERS", "many")]))
            .resolve()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable RINGPORT_SERVER__WORKERS: server.workers: cannot parse \"many\" as a non-negative integer"
        );
        let e = Layers::new()
            .env(env(&[("RINGPORT_SERVER__NOPE", "1")]))
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("unknown config key `server.nope`"));
        let e = Layers::new()
            .flag("log.format", "xml", "--log-format")
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("\"text\" or \"json\""), "{e}");
        let e = Layers::new()
            .file_text("f.toml", "[engine]\nrecv_buffers = 1000\n")
            .resolve()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "engine.recv_buffers must be a power of two between 1 and 32768, got 1000"
        );
        let e = Layers::new()
            .file_text("f.toml", "[enigne]\n")
            .resolve()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "config file f.toml: unknown config key `enigne`"
        );
        let e = Layers::new()
            .file_text("f.toml", "[engine\n")
            .resolve()
            .unwrap_err();
        assert!(e.to_string().starts_with("config file f.toml:"));
    }

    #[test]
    fn reads_a_real_file() {
        let dir = std::env::temp_dir().join(format!("ringport-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.toml");
        std::fs::write(&path, "[admin]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let c = Layers::new().file(&path).resolve().unwrap();
        assert_eq!(c.admin.listen.port(), 9000);
        let e = Layers::new()
            .file(dir.join("missing.toml"))
            .resolve()
            .unwrap_err();
        assert!(e.to_string().starts_with("cannot read config file"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
