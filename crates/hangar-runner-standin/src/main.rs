//! The `hangar-runner-standin` binary: the stand-in runner for tests and manual runs. The
//! runner's root is the folder above `bin/` of this executable's path, or `HANGAR_STANDIN_ROOT`
//! when set (a test then needs no `bin/Runner.Listener` symlink).

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    // The root override is mapped onto the path the library expects, ROOT/bin/Runner.Listener.
    let argv0 = match std::env::var_os("HANGAR_STANDIN_ROOT") {
        Some(root) if !root.is_empty() => std::path::PathBuf::from(root)
            .join("bin")
            .join("Runner.Listener"),
        _ => std::path::PathBuf::from(argv0),
    };
    std::process::exit(hangar_runner_standin::main_with_args(
        &argv0,
        args.collect(),
    ));
}
