//! `cargo bench --bench swarm -- [--quick] [--only B1 …] [--target ADDR] …`: reproducible
//! figures for the server (B0 … B6, the B8 soak), printed as a table and written as JSON.
//! The server runs as a child process (`mse-grpc serve --ephemeral`, so its memory is
//! measured alone) or is given with `--target`; B2 drives the session core of an in-process
//! server directly. Loopback only; every loop is bounded in time or count.
//!
//! `cargo test --all-targets` runs this binary without the `--bench` cargo bench appends:
//! it then runs every scenario at a tiny size as a smoke test instead.

mod args;
mod clients;
mod cpu;
mod legacy;
mod measure;
mod report;
mod scenarios;
mod seat;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mlua_swarm_grpc::pb::v1 as pb;
use mlua_swarm_grpc::pb::v1::operator_service_client::OperatorServiceClient;
use tracing_subscriber::EnvFilter;

use crate::args::{BenchArgs, Plan};
use crate::clients::BoxError;
use crate::target::Target;

/// The smoke's name, for libtest-style filters.
const SMOKE: &str = "smoke";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let bench = argv.iter().any(|a| a == "--bench");
    if !bench && !smoke_selected(&argv) {
        return ExitCode::SUCCESS;
    }
    let plan = bench.then(|| Plan::from_args(BenchArgs::parse()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swarm: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The bench as `plan` says, or the smoke without one, on a runtime of its own.
fn run(plan: Option<Plan>) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match plan {
        Some(plan) => runtime.block_on(measure_and_report(&plan)),
        None => runtime.block_on(smoke()),
    };
    // B2's in-process engine may keep a runtime thread busy; exit without waiting for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Runs what `plan` wants, prints the table, writes the JSON.
async fn measure_and_report(plan: &Plan) -> Result<(), BoxError> {
    let mut rows = scenarios::run(plan).await?;
    report::judge(&mut rows);
    report::print_table(&rows);
    report::write_json(plan, &rows)?;
    eprintln!("bench: results written to {}", plan.out.display());
    Ok(())
}

/// Every scenario at a tiny size against one child server, which must be left with no
/// operator session.
async fn smoke() -> Result<(), BoxError> {
    println!("running 1 test ({SMOKE}: every scenario at a tiny size)");
    let server = Target::spawn().await?;
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("swarm-smoke.json");
    measure_and_report(&Plan::smoke(server.addr.clone(), server.pid, out)).await?;
    let left = OperatorServiceClient::new(server.channel().await?)
        .list_sessions(pb::ListSessionsRequest {})
        .await?
        .into_inner()
        .sessions;
    if !left.is_empty() {
        return Err(format!("the bench left {} operator sessions behind", left.len()).into());
    }
    println!("test {SMOKE} ... ok");
    Ok(())
}

/// Whether libtest-style arguments (`cargo test [FILTER] -- [--list] [--skip S] …`) select
/// the smoke; `--list` lists it.
fn smoke_selected(argv: &[String]) -> bool {
    const TAKES_VALUE: [&str; 5] = ["--test-threads", "--format", "--color", "--logfile", "-Z"];
    let mut filters = Vec::new();
    let mut args = argv.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => {
                println!("{SMOKE}: test");
                return false;
            }
            "--ignored" => return false,
            "--skip" => {
                if args.next().is_some_and(|s| SMOKE.contains(s.as_str())) {
                    return false;
                }
            }
            a if TAKES_VALUE.contains(&a) => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => filters.push(a),
        }
    }
    filters.is_empty() || filters.iter().any(|f| SMOKE.contains(f))
}
