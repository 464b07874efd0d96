//! The `healporium` binary: parses the command line, starts logging, runs. The only place
//! that exits the process.

use clap::Parser;
use healporium::config::{Cli, Command, Config};
use std::process::ExitCode;

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Audit(healporium::config::AuditCommand::Verify(args)) => {
            healporium::telemetry::init(healporium::config::LogFormat::Text, "warn");
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(healporium::app::audit_verify(&args.database_url)) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reindex(args) => {
            healporium::telemetry::init(healporium::config::LogFormat::Text, "warn");
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            let base = args.base_url.as_deref().map(|b| b.trim_end_matches('/'));
            match runtime.block_on(healporium::app::reindex(&args.database_url, base, args.all)) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let config = match Config::from_args(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            healporium::telemetry::init(config.log_format, &config.log);
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            match runtime.block_on(healporium::app::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
