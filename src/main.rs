//! The `pomona` command: `serve` runs the server, `sim` runs a simulated fleet against one,
//! `enroll-profile` hands out enrollment profiles, `validate`/`plan`/`status` serve policy
//! authors, `push` asks a server to push one device, `crds` prints the CustomResourceDefinitions,
//! `openapi` the admin API's OpenAPI document,
//! `lock`/`erase`/`lost-mode`/`locate`/`restart`/`shutdown`/`clear-passcode` act on one device.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "pomona", version, about = "Declarative Apple MDM server")]
struct Cli {
    /// How log lines are written (to stderr): `text`, coloured only on a terminal and never when
    /// NO_COLOR is set, or `json`, one object per line for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "POMONA_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at the level `POMONA_LOG` asks for (default `info`, sqlx at `warn`).
fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("POMONA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => {
            // Escape codes only where a person reads them: not into files, pipes or
            // `kubectl logs`, and not when NO_COLOR (https://no-color.org) is set.
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            logs.with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the MDM server (HTTPS). With no flags: SQLite in ./pomona-data, policies from ./policies.
    Serve(Box<pomona::config::ServeArgs>),
    /// Run simulated devices against a server, speaking the real device protocol.
    Sim(Box<pomona::sim::SimArgs>),
    /// Write an enrollment profile (.mobileconfig with a one-time SCEP challenge), or with
    /// --link print a one-time enrollment link to hand to a device's user.
    EnrollProfile(pomona::cli::EnrollProfileArgs),
    /// Check a policy directory: exit 0 valid, 2 invalid; problems as file:line: message.
    Validate(pomona::cli::ValidateArgs),
    /// What a policy directory (or a git commit, with --git) would change on the fleet: exit 0
    /// none, 1 changes, 2 error.
    Plan(pomona::cli::PlanArgs),
    /// Policy revision and per-profile device counts of a running server.
    Status(pomona::cli::StatusArgs),
    /// Show or change a device's labels (`key=value` sets, `key-` removes): groups select on them.
    Label(pomona::cli::LabelArgs),
    /// Lock a device (message and phone number on the lock screen; a PIN on macOS).
    Lock(pomona::cli::actions::LockArgs),
    /// Erase a device: asks for its serial number to be typed (or --yes).
    Erase(pomona::cli::actions::EraseArgs),
    /// Put a supervised iPhone or iPad in Lost Mode (or take it out with --disable).
    LostMode(pomona::cli::actions::LostModeArgs),
    /// Where a device in Lost Mode is.
    Locate(pomona::cli::actions::DeviceArgs),
    /// Restart a device.
    Restart(pomona::cli::actions::RestartArgs),
    /// Shut a device down.
    Shutdown(pomona::cli::actions::DeviceArgs),
    /// Remove a device's passcode (with the UnlockToken it gave at enrollment).
    ClearPasscode(pomona::cli::actions::DeviceArgs),
    /// Ask a running server to push one device through APNs now.
    Push(pomona::push::cli::PushArgs),
    /// Print the CustomResourceDefinitions (generated from the policy types), or write one file
    /// per definition into --output-dir.
    Crds(CrdsArgs),
    /// Print the admin API's OpenAPI 3.1 document (also served at /api/v1/openapi.json).
    Openapi,
}

#[derive(clap::Args)]
struct CrdsArgs {
    /// Write `<name>.yaml` files here instead of printing one YAML stream.
    #[arg(long)]
    output_dir: Option<std::path::PathBuf>,
}

fn crds(args: CrdsArgs) -> ExitCode {
    let Some(dir) = args.output_dir else {
        print!("{}", pomona::policy::crd::definitions_yaml());
        return ExitCode::SUCCESS;
    };
    for (file, yaml) in pomona::policy::crd::definition_files() {
        let path = dir.join(file);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(pomona::allocator::on_idle)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Command::Crds(args) = cli.command {
        return crds(args);
    }
    if let Command::Openapi = cli.command {
        print!("{}", pomona::api::openapi::document_text());
        return ExitCode::SUCCESS;
    }
    if let Command::Validate(args) = &cli.command {
        return ExitCode::from(pomona::cli::validate(args));
    }
    use pomona::cli::actions::ActionCommand as A;
    let action = match cli.command {
        Command::Lock(a) => Some(A::Lock(a)),
        Command::Erase(a) => Some(A::Erase(a)),
        Command::LostMode(a) => Some(A::LostMode(a)),
        Command::Locate(a) => Some(A::Locate(a)),
        Command::Restart(a) => Some(A::Restart(a)),
        Command::Shutdown(a) => Some(A::Shutdown(a)),
        Command::ClearPasscode(a) => Some(A::ClearPasscode(a)),
        other => {
            return run_other(other, &runtime);
        }
    };
    match runtime.block_on(pomona::cli::actions::run(action.expect("set above"))) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_other(command: Command, runtime: &tokio::runtime::Runtime) -> ExitCode {
    match command {
        Command::Validate(_) | Command::Crds(_) | Command::Openapi => {
            unreachable!("handled above")
        }
        Command::Lock(_)
        | Command::Erase(_)
        | Command::LostMode(_)
        | Command::Locate(_)
        | Command::Restart(_)
        | Command::Shutdown(_)
        | Command::ClearPasscode(_) => unreachable!("handled above"),
        Command::Plan(args) => ExitCode::from(runtime.block_on(pomona::cli::plan(args))),
        Command::Label(args) => match runtime.block_on(pomona::cli::label(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Status(args) => match runtime.block_on(pomona::cli::status(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Serve(args) => {
            let config = match args.resolve() {
                Ok(c) => c,
                Err(problems) => {
                    eprintln!("error: {problems}");
                    return ExitCode::from(2);
                }
            };
            match runtime.block_on(pomona::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::EnrollProfile(args) => match runtime.block_on(pomona::cli::enroll_profile(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Push(args) => match runtime.block_on(pomona::push::cli::run(args)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Sim(args) => match runtime.block_on(pomona::sim::run_cli(*args)) {
            Ok(summary) if summary.failed_devices == 0 => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
