//! The `dispotify` binary: parse the command line, set up logging, run the
//! chosen command and map its result to an exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dispotify::config::{NodeConfig, ServeArgs};
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "dispotify",
    version,
    about = "Self-hosted distributed music streaming"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "DISPOTIFY_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one cluster node.
    Serve(Box<ServeArgs>),
    /// Run a local development cluster of N nodes on 127.0.0.1.
    Dev {
        /// Number of nodes (1 to 9).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// HTTP port of node 1; node i listens on this port + i - 1.
        #[arg(long, default_value_t = 8081)]
        http_port: u16,
        /// Directory for certificates, data and logs of every node.
        #[arg(long, default_value = ".dev-cluster")]
        data_dir: PathBuf,
    },
    /// Upload audio files or whole folders to a node.
    Upload {
        /// Base URL of any node, e.g. http://127.0.0.1:8081.
        #[arg(long, env = "DISPOTIFY_SERVER")]
        server: String,
        /// Files or folders to upload.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Log filter when `DISPOTIFY_LOG` is unset. openraft reports every failed
/// append to an unreachable follower at error level; the node's own health
/// checks log an unreachable peer once, so those reports are silenced.
/// tarpc's client logs each failed or timed-out call, at error level for a
/// deadline, and the node's caller logs the same failure once with the
/// peer and the retry or fallback it takes, so the client's lines are off.
const DEFAULT_LOG_FILTER: &str = "info,openraft=error,openraft::replication=off,tarpc=warn,\
     tarpc::client=off,quinn=warn,sqlx=warn,tower_http=warn";

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_env("DISPOTIFY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    limit_heap_retention();
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            let config = NodeConfig::load(*args)?;
            dispotify::node::run(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            nodes,
            http_port,
            data_dir,
        } => {
            dispotify::dev::run(dispotify::dev::DevArgs {
                nodes,
                http_port,
                data_dir,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Upload { server, paths } => {
            let summary = dispotify::upload_client::run(dispotify::upload_client::UploadArgs {
                server,
                paths,
            })
            .await?;
            Ok(summary.exit_code())
        }
    }
}

/// Most glibc malloc arenas the process may use. glibc's default is 8 per
/// core, and each thread that finds the arenas busy may get a new one: the
/// runtime's workers, its blocking pool and the thread that sqlx runs for
/// each SQLite connection. Every arena keeps the memory freed in it for
/// reuse by that arena only, so fewer arenas keep less memory idle.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 2;

/// Interval between two calls of `malloc_trim`, which hands the free pages
/// of every arena back to the operating system. glibc returns freed memory
/// on its own only from the top of an arena, so a node that applied many
/// Raft entries or served large listings otherwise keeps tens of MB it no
/// longer uses.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Caps glibc's malloc arenas and starts a thread that trims the heap every
/// [`MALLOC_TRIM_INTERVAL`]. Runs before any other thread starts, as
/// `mallopt` requires.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_heap_retention() {
    // SAFETY: mallopt only changes an allocator parameter, and no other
    // thread allocates yet.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) } != 1 {
        eprintln!("warning: mallopt(M_ARENA_MAX) failed; the heap may keep more freed memory");
    }
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".to_string())
        .spawn(|| loop {
            std::thread::sleep(MALLOC_TRIM_INTERVAL);
            // SAFETY: malloc_trim takes the allocator's own locks and may
            // run beside allocations on other threads.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    if let Err(error) = spawned {
        eprintln!("warning: cannot start the malloc-trim thread: {error}");
    }
}

/// Other allocators return freed memory to the operating system on their
/// own terms, so there is nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_heap_retention() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_log_filter_parses() {
        let parsed = EnvFilter::builder().parse(DEFAULT_LOG_FILTER);
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
