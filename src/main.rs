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
const DEFAULT_LOG_FILTER: &str =
    "info,openraft=error,openraft::replication=off,tarpc=warn,quinn=warn,sqlx=warn,tower_http=warn";

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
