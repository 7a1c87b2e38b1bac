//! The `switchboard` binary: parse flags, start the runtime, run the subcommand.

use clap::Parser;

// Per-call allocations (h2 frames, headers) are a measurable share of proxy CPU; mimalloc makes them cheaper.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use switchboard::app::{self, Fatal};
use switchboard::config::{Args, Command};

fn main() {
    let args = Args::parse();
    let result = match args.command {
        Command::Crd => {
            print!("{}", app::crd_yaml());
            Ok(())
        }
        Command::Explain(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Fatal::Runtime(format!("cannot start the runtime: {e}")))
            .and_then(|rt| rt.block_on(app::explain(&a)))
            .map(|out| print!("{out}")),
        Command::Run(a) => run(*a),
    };
    if let Err(e) = result {
        eprintln!("switchboard: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run(args: switchboard::config::RunArgs) -> Result<(), Fatal> {
    app::init_tracing(&args.log, args.log_format)?;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    // On one CPU a single-threaded runtime does the same work without cross-thread wake-ups.
    let mut rt = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if workers > 1 {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build().map_err(|e| Fatal::Runtime(format!("cannot start the runtime: {e}")))?;
    rt.block_on(app::run(args))
}
