//! `kubectl pam`: every step of the privileged-access workflow as one kubectl plugin.
//!
//! Pipeline per command: `cli` (parse) -> `client` (read) -> pure decisions (`task`,
//! `objects`, `select`, `access`) -> `client` (write) -> `render` (print), with `error`
//! turning every failure into a message and an exit code. Only `client` and `commands` touch
//! the API server; everything else is plain data and unit-tested. `audit` checks and reads
//! exported audit trails offline.

pub mod access;
pub mod audit;
pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod objects;
pub mod render;
pub mod select;
pub mod task;

#[cfg(test)]
mod fixtures;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// The `kubectl-pam` binary: parse, run, print the error if any, exit with its code.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // kube's rustls needs a process-wide crypto provider; an error means one is already set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&error::Error::Transport(format!("cannot start: {e}"))),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

fn fail(e: &error::Error) -> ExitCode {
    let text = match e {
        // kubectl prints server errors without a prefix: "Error from server (Forbidden): ...".
        error::Error::Server { .. } => e.message(),
        _ => format!("{} {}", render::error_prefix(), e.message()),
    };
    let mut err = anstream::stderr();
    let _ = writeln!(err, "{text}");
    ExitCode::from(e.exit_code())
}
