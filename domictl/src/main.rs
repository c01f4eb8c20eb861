//! `domictl`: operate a domi cluster. Run `domictl --help`.
//!
//! `cargo run -p domictl -- --etcd http://127.0.0.1:2379 --cluster demo nodes`
//!
//! Exit codes: 0 done, 1 a command failed (one line on stderr), 2 invalid
//! arguments or settings.

use clap::Parser;
use domictl::{run, Cli, Environment};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    if let Err(e) = run(&cli, &Environment::from_process(), &mut out) {
        let message = e.to_string().replace(['\n', '\r'], " ");
        eprintln!("domictl: {message}");
        std::process::exit(e.exit_code());
    }
}
