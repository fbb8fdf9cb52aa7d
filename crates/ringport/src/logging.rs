//! Logging setup: `tracing` to stderr, as text for people or JSON for log pipelines.
//!
//! The filter is `log.level` from the resolved configuration; `RUST_LOG` is already merged
//! into it by the configuration layers (it overrides the file, and `RINGPORT_LOG__LEVEL` or
//! `--log-level` override it).

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    #[error("log.level {level:?} is not a valid filter: {message}")]
    BadFilter { level: String, message: String },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Builds the subscriber for `config`, writing to `writer` (colours only when `ansi`).
pub fn subscriber<W>(
    config: &LogConfig,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.level).map_err(|e| LoggingError::BadFilter {
        level: config.level.clone(),
        message: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_thread_names(true)
        .with_ansi(ansi);
    Ok(match config.format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    })
}

/// Installs the global subscriber (stderr). Call once, early.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    use std::io::IsTerminal as _;
    let sub = subscriber(config, std::io::stderr, std::io::stderr().is_terminal())?;
    tracing::subscriber::set_global_default(sub).map_err(|_| LoggingError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn capture(format: LogFormat, level: &str) -> String {
        let buf = Buf::default();
        let config = LogConfig {
            format,
            level: level.into(),
        };
        let sub = subscriber(&config, buf.clone(), false).unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(listen = "0.0.0.0:4666", "listening");
            tracing::debug!("hidden at info");
        });
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines() {
        let out = capture(LogFormat::Json, "info");
        let line = out.lines().next().unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["message"], "listening");
        assert_eq!(v["listen"], "0.0.0.0:4666");
        assert_eq!(v["level"], "INFO");
        assert_eq!(out.lines().count(), 1, "debug filtered out");
    }

    #[test]
    fn text_and_level() {
        let out = capture(LogFormat::Text, "debug");
        assert!(out.contains("listening"));
        assert!(out.contains("hidden at info"));
    }

    #[test]
    fn bad_filter() {
        let config = LogConfig {
            format: LogFormat::Text,
            level: "=[".into(),
        };
        assert!(matches!(
            subscriber(&config, std::io::stderr, false),
            Err(LoggingError::BadFilter { .. })
        ));
    }
}
