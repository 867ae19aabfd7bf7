//! A custom executor: `volley-executor`'s whole command line, with the
//! example's functions registered. Start it like `volley-executor`:
//!
//! ```sh
//! cargo run -p volley-client --example udf_executor -- --scheduler http://127.0.0.1:50050
//! ```

#[path = "common/functions.rs"]
mod functions;

fn main() -> std::process::ExitCode {
    volley_executor::run_main(functions::registry())
}
