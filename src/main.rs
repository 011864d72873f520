//! The `rke2` binary: parse the command line, load the configuration, set up logging, run the
//! chosen role until a signal, and map the outcome to an exit code (64 for bad usage or
//! configuration, 1 for runtime failures).

use std::process::ExitCode;

use rke2::cli::{self, EXIT_FAILURE, EXIT_USAGE};
use rke2::config::{self, spec::Role};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's malloc: the API server allocates and frees many small objects
/// (JSON trees, headers, buffers) across worker threads, and glibc's free-list consolidation
/// took about a third of a busy server's CPU (docs/scale.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The validated configuration of the role to run.
enum Loaded {
    Server(Box<config::ServerConfig>),
    Agent(Box<config::AgentConfig>),
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code as u8)
}

fn main() -> ExitCode {
    let matches = match cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return exit(EXIT_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let env = cli::env_snapshot();
    let (name, sub) = matches.subcommand().expect("subcommand required");
    if let Some(code) = cli::run_admin(name, sub) {
        return exit(code);
    }
    // Admin commands were handled above; clap accepts no other subcommand, and should one be
    // added without a role it is a usage error, not a crash.
    let role = match name {
        "server" => Role::Server,
        "agent" => Role::Agent,
        other => {
            eprintln!("rke2: unknown command \"{other}\"");
            return exit(EXIT_USAGE);
        }
    };
    let sources = cli::sources_from(sub, role, &env);
    let loaded = match role {
        Role::Server => config::load_server(&sources).map(|l| {
            (
                l.warnings,
                l.config.node.clone(),
                Loaded::Server(Box::new(l.config)),
            )
        }),
        Role::Agent => config::load_agent(&sources).map(|l| {
            (
                l.warnings,
                l.config.node.clone(),
                Loaded::Agent(Box::new(l.config)),
            )
        }),
    };
    let (warnings, node, loaded) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("rke2 {name}: configuration error: {e}");
            return exit(EXIT_USAGE);
        }
    };
    let log_target = rke2::logging::init(
        node.log_format,
        node.debug,
        env.get("JOURNAL_STREAM").map(String::as_str),
        env.get("RUST_LOG").map(String::as_str),
    );
    rke2::https::install_panic_hook();
    for w in warnings {
        tracing::warn!(component = "config", "{w}");
    }
    if !env.contains_key("MALLOC_ARENA_MAX") {
        rke2::daemon::limit_malloc_arenas();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rke2: cannot start the async runtime: {e}");
            return exit(EXIT_FAILURE);
        }
    };
    let cancel = CancellationToken::new();
    let result: Result<(), String> = runtime.block_on(async {
        tokio::spawn({
            let (cancel, name) = (cancel.clone(), name.to_string());
            async move {
                if let Some(signal) = rke2::daemon::wait_for_shutdown_signal(cancel).await {
                    tracing::error!(component = "daemon", "{signal} received while shutting down: exiting at once");
                    eprintln!("rke2 {name}: {signal} received while shutting down: exiting at once, without waiting for a clean shutdown");
                    std::process::exit(EXIT_FAILURE);
                }
            }
        });
        match loaded {
            Loaded::Server(c) => rke2::server::run(
                *c,
                rke2::server::ProcessEnv {
                    path: env.get("PATH").cloned(),
                },
                cancel,
            )
            .await
            .map_err(|e| e.to_string()),
            Loaded::Agent(c) => rke2::agent::run(*c, cancel).await.map_err(|e| e.to_string()),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(component = name, "{e}");
            // Under systemd the error is already in the journal; stderr would only repeat it.
            let in_journal = log_target == rke2::logging::LogTarget::Journal
                && rke2::logging::stderr_is_journal(env.get("JOURNAL_STREAM").map(String::as_str));
            if !in_journal {
                eprintln!("rke2 {name}: {e}");
            }
            exit(EXIT_FAILURE)
        }
    }
}
