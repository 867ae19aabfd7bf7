//! `volley-executor`: runs a Volley executor until its scheduler goes away
//! or it is interrupted. Executors that run user functions are built the
//! same way, with their functions in the registry.

use std::process::ExitCode;

use volley_dataflow::UdfRegistry;

fn main() -> ExitCode {
    volley_executor::run_main(UdfRegistry::new())
}
