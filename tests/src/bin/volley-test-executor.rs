//! A custom executor, built as a user would build one: `volley-executor`'s
//! command line with the test functions registered.

use std::process::ExitCode;

fn main() -> ExitCode {
    volley_executor::run_main(volley_tests::udfs::registry())
}
