//! `dispotify-certgen`: creates the cluster CA and node certificates, and
//! shows what a certificate file holds.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dispotify_certs::{
    init_ca, inspect, issue_node_cert, NodeCertRequest, Validity, DEFAULT_NODE_VALIDITY_DAYS,
    MAX_NODE_VALIDITY_DAYS,
};

/// Create and inspect the certificates Dispotify nodes use to authenticate
/// each other.
#[derive(Debug, Parser)]
#[command(name = "dispotify-certgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a cluster CA: writes ca.pem and ca.key (mode 0600) to DIR.
    Init {
        /// Directory to write the CA to; created if missing.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace an existing CA. Certificates it issued stop being trusted.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node certificate: writes node.pem, node.key (mode 0600) and a
    /// copy of ca.pem to DIR.
    Node {
        /// Directory holding the CA's ca.pem and ca.key.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Node id: 1 to 64 ASCII letters, digits, '-', '_' or '.', starting
        /// with a letter or digit.
        #[arg(long)]
        id: String,
        /// Extra DNS name the node is reached by; repeat for several.
        #[arg(long = "dns", value_name = "NAME")]
        dns_names: Vec<String>,
        /// Extra IP address the node is reached by; repeat for several.
        #[arg(long = "ip", value_name = "ADDR")]
        ip_addrs: Vec<IpAddr>,
        /// Validity in days, counted from now.
        #[arg(
            long,
            value_name = "N",
            default_value_t = DEFAULT_NODE_VALIDITY_DAYS,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_NODE_VALIDITY_DAYS)),
        )]
        days: u32,
        /// Directory to write the node's files to; created if missing.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing node files.
        #[arg(long)]
        force: bool,
    },
    /// Show the subject, SANs, node id, validity and issuer of the first
    /// certificate in a PEM or DER file.
    Inspect {
        /// Certificate file to read.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { out, force } => {
            let paths = init_ca(&out, force)?;
            println!("CA certificate: {}", paths.cert.display());
            println!("CA private key: {}", paths.key.display());
        }
        Command::Node {
            ca,
            id,
            dns_names,
            ip_addrs,
            days,
            out,
            force,
        } => {
            let request = NodeCertRequest {
                id,
                dns_names,
                ip_addrs,
                validity: Validity::days_from_now(days)?,
            };
            let paths = issue_node_cert(&ca, &request, &out, force)?;
            println!("node certificate: {}", paths.cert.display());
            println!("node private key: {}", paths.key.display());
            println!("CA certificate:   {}", paths.ca_cert.display());
        }
        Command::Inspect { file } => {
            let info = inspect(&file)?;
            println!("{info}");
        }
    }
    Ok(())
}
