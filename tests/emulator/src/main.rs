//! `b24-emulator --listen 127.0.0.1:0 [--tls]`: prints
//! `b24-emulator listening on http://127.0.0.1:PORT` and serves until SIGTERM/SIGINT.

use b24_emulator::server::{serve, tick};
use b24_emulator::state::Shared;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: b24-emulator [--listen HOST:PORT] [--tls]\n\
  --listen  address to serve on (default 127.0.0.1:0, port 0 = any free port)\n\
  --tls     serve https with a self-signed certificate for 127.0.0.1 and localhost";

fn main() -> ExitCode {
    let mut listen = "127.0.0.1:0".to_string();
    let mut tls = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => match args.next() {
                Some(a) => listen = a,
                None => return usage("--listen needs an address"),
            },
            "--tls" => tls = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("b24-emulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(listen, tls))
}

fn usage(why: &str) -> ExitCode {
    eprintln!("b24-emulator: {why}\n{USAGE}");
    ExitCode::from(2)
}

async fn run(listen: String, tls: bool) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("b24-emulator: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("b24-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shared = Arc::new(Shared::new(addr.to_string(), tls));
    shared.registry.add(shared.clone());
    // The signal handlers exist before the address is announced: a SIGTERM sent as soon as the
    // first line is read must end the process cleanly, not kill it with the default action.
    let shutdown = shutdown_signal();
    let server = tokio::spawn(serve(listener, shared.clone(), tls));
    tokio::spawn(tick(shared.registry.clone()));
    println!("b24-emulator listening on {}", shared.base_url());
    let _ = std::io::stdout().flush();
    tokio::select! {
        r = server => {
            eprintln!("b24-emulator: server stopped: {r:?}");
            ExitCode::FAILURE
        }
        _ = shutdown => ExitCode::SUCCESS,
    }
}

/// Registers SIGTERM and SIGINT at once (`signal()` installs the handler when called, not when
/// first polled) and returns a future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            _ => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
