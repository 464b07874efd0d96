//! The `healporium` binary: parses the command line, starts logging, runs. The only place
//! that exits the process.

use clap::Parser;
use healporium::config::{
    Cli, ClientAddArgs, ClientCommand, ClientType, Command, Config, KeyCommand, UserCommand,
};
use healporium::smart::accounts::{ClientKind, NewClient, NewUser, Role};
use std::io::BufRead;
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

/// Runs an admin command: its summary on stdout, or one error line on stderr.
fn admin(task: impl std::future::Future<Output = anyhow::Result<String>>) -> ExitCode {
    healporium::telemetry::init(healporium::config::LogFormat::Text, "warn");
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(task) {
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

/// A usage error: one line, exit code 2.
fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// The password of `user add` and `user reset-password`: the flag or HEALPORIUM_PASSWORD, else
/// the first line of stdin.
fn password(given: Option<String>) -> Result<String, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        return Err(
            "no password: give --password, HEALPORIUM_PASSWORD or a line on standard input"
                .to_string(),
        );
    }
    Ok(p)
}

fn new_client(args: ClientAddArgs) -> Result<NewClient, String> {
    let jwks = match &args.jwks_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("--jwks-file: cannot read {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let kind = match args.kind {
        ClientType::Public => ClientKind::Public,
        ClientType::Confidential => ClientKind::Confidential,
        ClientType::Backend => ClientKind::Backend,
    };
    Ok(NewClient {
        client_id: args.client_id,
        name: args.name,
        kind,
        redirect_uris: args.redirect_uris,
        scopes: args.scope,
        jwks,
        jwks_url: args.jwks_url,
    })
}

/// `healporium user …`.
fn user_command(command: UserCommand) -> ExitCode {
    use healporium::app::accounts as a;
    match command {
        UserCommand::Add(args) => {
            let role = match Role::parse(&args.role) {
                Ok(r) => r,
                Err(e) => return usage(&format!("--role: {e}")),
            };
            let password = match password(args.password) {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            let user = NewUser {
                username: args.username,
                password,
                role,
                fhir_user: args.fhir_user,
            };
            admin(async move { a::user_add(&args.database_url, user).await })
        }
        UserCommand::List(args) => {
            admin(async move { a::user_list(&args.database.database_url).await })
        }
        UserCommand::Show(args) => {
            admin(async move { a::user_show(&args.database.database_url, &args.username).await })
        }
        UserCommand::Disable(args) => admin(async move {
            a::user_set_disabled(&args.database.database_url, &args.username, true).await
        }),
        UserCommand::Enable(args) => admin(async move {
            a::user_set_disabled(&args.database.database_url, &args.username, false).await
        }),
        UserCommand::Remove(args) => {
            admin(async move { a::user_remove(&args.database.database_url, &args.username).await })
        }
        UserCommand::ResetPassword(args) => {
            let password = match password(args.password) {
                Ok(p) => p,
                Err(e) => return usage(&e),
            };
            admin(async move {
                a::user_reset_password(&args.database.database_url, &args.username, &password).await
            })
        }
    }
}

/// `healporium client …`.
fn client_command(command: ClientCommand) -> ExitCode {
    use healporium::app::accounts as a;
    match command {
        ClientCommand::Add(args) => {
            let url = args.database_url.clone();
            let client = match new_client(args) {
                Ok(c) => c,
                Err(e) => return usage(&e),
            };
            admin(async move { a::client_add(&url, client).await })
        }
        ClientCommand::List(args) => {
            admin(async move { a::client_list(&args.database.database_url).await })
        }
        ClientCommand::Show(args) => {
            admin(async move { a::client_show(&args.database.database_url, &args.id).await })
        }
        ClientCommand::Disable(args) => admin(async move {
            a::client_set_disabled(&args.database.database_url, &args.id, true).await
        }),
        ClientCommand::Enable(args) => admin(async move {
            a::client_set_disabled(&args.database.database_url, &args.id, false).await
        }),
        ClientCommand::Remove(args) => {
            admin(async move { a::client_remove(&args.database.database_url, &args.id).await })
        }
        ClientCommand::RotateSecret(args) => {
            admin(
                async move { a::client_rotate_secret(&args.database.database_url, &args.id).await },
            )
        }
    }
}

fn main() -> ExitCode {
    let args = match healporium::config::args_with_config_file() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    match cli.command {
        Command::Audit(healporium::config::AuditCommand::Verify(args)) => {
            healporium::telemetry::init(healporium::config::LogFormat::Text, "warn");
            let runtime = match runtime() {
                Ok(r) => r,
                Err(code) => return code,
            };
            let key = args.audit_key_file.clone().unwrap_or_else(|| {
                healporium::config::default_audit_key(&args.database.database_url)
            });
            match runtime.block_on(healporium::app::audit_verify(
                &args.database.database_url,
                &key,
            )) {
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
        Command::Jobs(command) => admin(healporium::app::jobs_command(command)),
        Command::Feeds(command) => admin(healporium::app::feeds::feeds_command(command)),
        Command::Import(healporium::config::ImportCommand::Hl7v2(args)) => {
            admin(healporium::app::feeds::import_hl7v2(args))
        }
        Command::Import(healporium::config::ImportCommand::Csv(args)) => {
            admin(healporium::app::feeds::import_csv(args))
        }
        Command::Import(healporium::config::ImportCommand::Ndjson(args)) => {
            admin(healporium::app::feeds::import_ndjson(args))
        }
        Command::Finance(healporium::config::FinanceCommand::RunDay(args)) => admin(async move {
            healporium::app::finance_run_day(&args.database.database_url, &args.date, &args.finance)
                .await
        }),
        Command::Finance(healporium::config::FinanceCommand::Verify(args)) => {
            admin(async move { healporium::app::finance_verify(&args.database.database_url).await })
        }
        Command::Reindex(args) => {
            let base = args
                .base_url
                .as_deref()
                .map(|b| b.trim_end_matches('/').to_string());
            admin(async move {
                healporium::app::reindex(&args.database_url, base.as_deref(), args.all).await
            })
        }
        Command::User(command) => user_command(command),
        Command::Client(command) => client_command(command),
        Command::Key(KeyCommand::Rotate(args)) => {
            let ttl = i64::try_from(args.access_token_ttl).unwrap_or(3600);
            admin(async move { healporium::app::key_rotate(&args.database_url, ttl).await })
        }
        Command::Serve(args) => {
            let config = match Config::from_args(*args) {
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
