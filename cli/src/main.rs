//! kolmctl: the kolm command line. Parses flags (clap), runs one verb
//! (offline on the store, or through kolmd's gRPC API), and maps failures to
//! exit codes scripts can rely on.

// First, so that its `outln!` and `out!` reach every module below.
#[macro_use]
mod output;

mod allocator;
mod base_chat;
mod cli;
mod commands;
mod daemon;
mod exit;
mod grounding;
mod known_bases;
mod progress;
mod student;
mod trainer;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    allocator::keep_freed_memory();
    let args = cli::Cli::parse();
    let json = args.command.wants_json();
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err, json),
    }
}
