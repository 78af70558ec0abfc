//! The `pipesched` binary: parses the command line and reports errors as one paragraph on
//! stderr with a non-zero exit status (2 for usage errors caught by the parser, 1 otherwise).

mod cli;

use clap::Parser;

fn main() {
    pipesched::heap::keep_freed_memory();
    let cli = cli::Cli::parse();
    if let Err(e) = cli.run() {
        pipesched::output::report_error(&e);
        std::process::exit(1);
    }
}
