//! The `hangar` binary: everything lives in the library; see `cli` for commands and exit codes.
//!
//! Invoked through a link named `Runner.Listener` (as `hangar dev` and the tests install it in a
//! runner folder), the binary is the stand-in runner instead: the test double of actions/runner
//! that talks to the emulator. The real image has the real runner there, never this link.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let argv0 = std::path::PathBuf::from(argv0);
    if argv0.file_name().is_some_and(|n| n == "Runner.Listener") {
        let code = hangar_runner_standin::main_with_args(&argv0, args.collect());
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    hangar::cli::main()
}
