//! The `ringport` binary: parse the command line, resolve configuration, dispatch.
//! Errors become `anyhow` context here and nowhere else.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context as _};
use clap::Parser as _;
use ringport::cli::{Cli, Command, ConfigCommand, ServeArgs, TokenArgs};
use ringport::config::{default_toml, Layers};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringport: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Token(args) => token(&args),
        Command::Config(ConfigCommand::Default) => {
            print!("{}", default_toml());
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            Layers::new()
                .file(&file)
                .env(std::env::vars())
                .resolve()
                .with_context(|| format!("{} is not valid", file.display()))?;
            println!("{}: ok", file.display());
            Ok(())
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args
        .layers(std::env::vars())?
        .resolve()
        .context("invalid configuration")?;
    ringport::logging::init(&config.log)?;
    ringport::serve::run(&config)?;
    Ok(())
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let config = args
        .layers(std::env::vars())?
        .resolve()
        .context("invalid configuration")?;
    let Some(secret) = config.auth.secret.as_deref() else {
        bail!(
            "no token secret configured: set RINGPORT_AUTH_SECRET (or RINGPORT_AUTH__SECRET), \
             pass --secret, or set auth.secret in the file given with --config \
             (the same secret the gateway verifies with; at least 32 bytes)"
        );
    };
    if args.rooms.is_empty() {
        eprintln!("ringport: warning: token admits no rooms (use --rooms a,b,prefix.*)");
    }
    let token = ringport::auth::mint(
        &args.user,
        &args.rooms,
        args.ttl,
        secret.as_bytes(),
        SystemTime::now(),
    )?;
    println!("{token}");
    Ok(())
}
