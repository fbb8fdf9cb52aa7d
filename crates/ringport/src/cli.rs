//! Command-line interface (clap derive) and its translation into configuration layers.
//!
//! Named flags are shorthands for config keys (`--workers 4` is `--set server.workers=4`);
//! `--set section.key=value` reaches every key. Flags override the environment, which
//! overrides the file, which overrides the defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{ConfigError, Layers, Override};

#[derive(Debug, Parser)]
#[command(
    name = "ringport",
    version,
    about = "Long-connection TCP push gateway (io_uring)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Mint a client token (HS256 JWT) signed with the configured secret.
    Token(TokenArgs),
    /// Print or check configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the full default configuration, every key commented.
    Default,
    /// Validate FILE (with RINGPORT_* environment overrides applied, as `serve` would).
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
}

/// Where configuration comes from, shared by `serve` and `token`.
#[derive(Debug, Args, Default)]
pub struct ConfigSource {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "RINGPORT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Override any key: `--set engine.ring_entries=8192` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
}

/// The data-plane application.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AppArg {
    Gateway,
    Echo,
}

/// The I/O backend.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IoBackendArg {
    Auto,
    Uring,
    Epoll,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    /// Client listener (server.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin HTTP listener (admin.listen).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Shard threads, 0 = one per core (server.workers).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Pin shard i to CPU i (server.pin_cpus).
    #[arg(long)]
    pub pin_cpus: bool,
    /// Data-plane application (server.app).
    #[arg(long, value_enum)]
    pub app: Option<AppArg>,
    /// I/O backend: auto (io_uring where allowed, else epoll), uring or epoll (engine.io_backend).
    #[arg(long, value_enum)]
    pub io_backend: Option<IoBackendArg>,
    /// Token secret (auth.secret); prefer RINGPORT_AUTH_SECRET, flags show up in `ps`.
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
    /// Accept clients without a token (auth.allow_anonymous).
    #[arg(long, value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,
    /// Admin API key (admin.api_key); prefer RINGPORT_ADMIN__API_KEY.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Log format (log.format).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Log filter, e.g. `info` or `ringport=debug` (log.level).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Join a cluster over NATS: `nats://HOST:PORT[,...]` (cluster.servers).
    #[arg(long, value_name = "URLS")]
    pub cluster: Option<String>,
    /// This node's name in the cluster (cluster.node_id).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub source: ConfigSource,
    /// User id (the token's `sub`).
    #[arg(long)]
    pub user: String,
    /// Rooms the token admits: names or prefixes ending in `*`, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "ROOMS")]
    pub rooms: Vec<String>,
    /// Lifetime, e.g. `90s`, `15m`, `1h`, `7d`, `1h30m`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Signing secret; otherwise auth.secret from RINGPORT_AUTH_SECRET or the config file.
    #[arg(long, value_name = "S")]
    pub secret: Option<String>,
}

impl ConfigSource {
    /// Defaults, the file, the process environment and `--set`, in that order.
    pub fn layers(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layers, ConfigError> {
        let mut layers = Layers::new().env(env);
        if let Some(path) = &self.config {
            layers = layers.file(path);
        }
        let sets = self
            .set
            .iter()
            .map(|s| Override::parse_set(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(layers.overrides(sets))
    }
}

impl ServeArgs {
    /// All layers, with the named flags applied after `--set` (named flags win).
    pub fn layers(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layers, ConfigError> {
        let mut l = self.source.layers(env)?;
        if let Some(v) = &self.listen {
            l = l.flag("server.listen", v, "--listen");
        }
        if let Some(v) = &self.admin {
            l = l.flag("admin.listen", v, "--admin");
        }
        if let Some(v) = self.workers {
            l = l.flag("server.workers", v, "--workers");
        }
        if self.pin_cpus {
            l = l.flag("server.pin_cpus", true, "--pin-cpus");
        }
        if let Some(v) = self.app {
            let v = match v {
                AppArg::Gateway => "gateway",
                AppArg::Echo => "echo",
            };
            l = l.flag("server.app", v, "--app");
        }
        if let Some(v) = self.io_backend {
            let v = match v {
                IoBackendArg::Auto => "auto",
                IoBackendArg::Uring => "uring",
                IoBackendArg::Epoll => "epoll",
            };
            l = l.flag("engine.io_backend", v, "--io-backend");
        }
        if let Some(v) = &self.secret {
            l = l.flag("auth.secret", v, "--secret");
        }
        if let Some(v) = self.allow_anonymous {
            l = l.flag("auth.allow_anonymous", v, "--allow-anonymous");
        }
        if let Some(v) = &self.api_key {
            l = l.flag("admin.api_key", v, "--api-key");
        }
        if let Some(v) = self.log_format {
            let v = match v {
                LogFormatArg::Text => "text",
                LogFormatArg::Json => "json",
            };
            l = l.flag("log.format", v, "--log-format");
        }
        if let Some(v) = &self.log_level {
            l = l.flag("log.level", v, "--log-level");
        }
        if let Some(v) = &self.cluster {
            l = l.flag("cluster.servers", v, "--cluster");
        }
        if let Some(v) = &self.node_id {
            l = l.flag("cluster.node_id", v, "--node-id");
        }
        Ok(l)
    }
}

impl TokenArgs {
    pub fn layers(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layers, ConfigError> {
        let mut l = self.source.layers(env)?;
        if let Some(v) = &self.secret {
            l = l.flag("auth.secret", v, "--secret");
        }
        Ok(l)
    }
}

/// Parses `90`, `90s`, `15m`, `1h`, `7d`, `1h30m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("unknown unit {c:?} in {s:?} (use s, m, h, d)")),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("expected a number before {c:?} in {s:?}"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration {s:?} is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!("missing unit after {digits} in {s:?}"));
    }
    if total == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppMode, LogFormat};

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("ringport").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "h", "10x", "10m5", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serve_flags_become_config() {
        let Command::Serve(args) = parse(&[
            "serve",
            "--listen",
            "127.0.0.1:7000",
            "--workers",
            "2",
            "--pin-cpus",
            "--app",
            "echo",
            "--log-format",
            "json",
            "--cluster",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
            "--node-id",
            "gw-a",
            "--set",
            "engine.ring_entries=1024",
            "--set",
            "server.workers=8",
        ]) else {
            panic!("serve")
        };
        let env = vec![("RINGPORT_SERVER__WORKERS".to_owned(), "3".to_owned())];
        let c = args.layers(env).unwrap().resolve().unwrap();
        assert_eq!(c.server.listen.port(), 7000);
        assert_eq!(c.server.workers, 2, "named flag beats --set and env");
        assert!(c.server.pin_cpus);
        assert_eq!(c.server.app, AppMode::Echo);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.engine.ring_entries, 1024);
        assert_eq!(c.cluster.server_list().unwrap().len(), 2);
        assert_eq!(c.cluster.node_id.as_deref(), Some("gw-a"));
    }

    #[test]
    fn bad_set_is_reported() {
        let Command::Serve(args) = parse(&["serve", "--set", "engine.ring_entries"]) else {
            panic!("serve")
        };
        assert!(args.layers(Vec::new()).is_err());
    }

    #[test]
    fn token_args() {
        let Command::Token(args) = parse(&[
            "token",
            "--user",
            "u1",
            "--rooms",
            "a,b,chat.*",
            "--ttl",
            "2h",
        ]) else {
            panic!("token")
        };
        assert_eq!(args.rooms, vec!["a", "b", "chat.*"]);
        assert_eq!(args.ttl, Duration::from_secs(7200));
        assert_eq!(
            args.layers(Vec::new())
                .unwrap()
                .resolve()
                .unwrap()
                .auth
                .secret,
            None
        );
    }

    #[test]
    fn config_subcommands() {
        assert!(matches!(
            parse(&["config", "default"]),
            Command::Config(ConfigCommand::Default)
        ));
        assert!(matches!(
            parse(&["config", "check", "x.toml"]),
            Command::Config(ConfigCommand::Check { .. })
        ));
    }
}
