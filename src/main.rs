//! The `switchboard` binary: parse flags, start the runtime, run the subcommand.

use clap::Parser;
use switchboard::app::{self, Fatal};
use switchboard::config::{Args, Command};

fn main() {
    let args = Args::parse();
    let result = match args.command {
        Command::Crd => {
            print!("{}", app::crd_yaml());
            Ok(())
        }
        Command::Explain(a) => app::explain(&a).map(|out| print!("{out}")),
        Command::Run(a) => run(*a),
    };
    if let Err(e) = result {
        eprintln!("switchboard: {e}");
        std::process::exit(e.exit_code());
    }
}

fn run(args: switchboard::config::RunArgs) -> Result<(), Fatal> {
    app::init_tracing(&args.log, args.log_format)?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().map_err(|e| Fatal::Runtime(format!("cannot start the runtime: {e}")))?;
    rt.block_on(app::run(args))
}
