//! Command-line and environment input of the stand-in, resolved the way the official runner
//! resolves it: a command word (`configure`, `remove`, `run`), `--name value` options and
//! `--flag` switches, each of which may instead come from `ACTIONS_RUNNER_INPUT_<NAME>` (argv
//! wins). Also the environment snapshot the runner works from: the process environment plus the
//! root's `.env` file, from which children get everything except the `ACTIONS_RUNNER_INPUT_*`
//! variables (the real runner removes those from its environment so secrets never reach a step).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;

/// The prefix of the environment variables that may carry any argument.
pub const INPUT_PREFIX: &str = "ACTIONS_RUNNER_INPUT_";

/// Options that take a value.
const VALUE_OPTIONS: &[&str] = &[
    "url",
    "token",
    "name",
    "labels",
    "runnergroup",
    "work",
    "jitconfig",
];

/// Switches (no value; `true` when given through the environment).
const FLAGS: &[&str] = &[
    "unattended",
    "replace",
    "ephemeral",
    "disableupdate",
    "no-default-labels",
    "once",
    "local",
    "version",
    "help",
];

/// A string that must never be printed: its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the runner was asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Configure,
    Remove,
    Run,
}

/// Every input after resolution of argv against `ACTIONS_RUNNER_INPUT_*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cli {
    /// `None` when no command word was given (the listener then runs, as the real one does).
    pub command: Option<Command>,
    pub url: Option<String>,
    pub token: Option<Secret>,
    pub name: Option<String>,
    /// Custom labels, split on commas, blanks dropped.
    pub labels: Vec<String>,
    pub runnergroup: Option<String>,
    pub work: Option<String>,
    pub jitconfig: Option<Secret>,
    pub unattended: bool,
    pub replace: bool,
    pub ephemeral: bool,
    pub disableupdate: bool,
    pub no_default_labels: bool,
    pub once: bool,
    pub local: bool,
    pub version: bool,
    pub help: bool,
}

/// The environment variable name for an input: `no-default-labels` →
/// `ACTIONS_RUNNER_INPUT_NO_DEFAULT_LABELS`.
pub fn input_var(name: &str) -> String {
    format!(
        "{INPUT_PREFIX}{}",
        name.replace('-', "_").to_ascii_uppercase()
    )
}

/// Booleans given through the environment: `true` (any case) or `1`.
fn truthy(v: &str) -> bool {
    v.eq_ignore_ascii_case("true") || v == "1"
}

impl Cli {
    /// Resolves `args` (without argv0) against `env`. Errors are user-facing messages.
    pub fn resolve(args: &[OsString], env: &Env) -> Result<Cli, String> {
        let mut command = None;
        let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut flags: Vec<&'static str> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();

        let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
        while let Some(arg) = it.next() {
            if let Some(opt) = arg.strip_prefix("--") {
                // `--name=value` is accepted as well as `--name value`.
                let (key, inline) = match opt.split_once('=') {
                    Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
                    None => (opt.to_ascii_lowercase(), None),
                };
                if let Some(known) = VALUE_OPTIONS.iter().find(|k| **k == key) {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| format!("Missing value for argument '--{known}'."))?,
                    };
                    values.insert(known, value);
                } else if let Some(known) = FLAGS.iter().find(|k| **k == key) {
                    flags.push(known);
                } else {
                    unknown.push(arg.clone());
                }
            } else if command.is_none() {
                command = Some(match arg.to_ascii_lowercase().as_str() {
                    "configure" => Command::Configure,
                    "remove" => Command::Remove,
                    "run" => Command::Run,
                    _ => {
                        unknown.push(arg.clone());
                        continue;
                    }
                });
            } else {
                unknown.push(arg.clone());
            }
        }
        if !unknown.is_empty() {
            // The real runner refuses unknown input rather than guessing.
            return Err(format!(
                "Unrecognized command-line input arguments: '{}'. For usage refer to: ./config.sh --help or ./run.sh --help",
                unknown.join("', '")
            ));
        }

        let value = |k: &'static str| -> Option<String> {
            values
                .get(k)
                .cloned()
                .or_else(|| env.get(&input_var(k)).filter(|v| !v.is_empty()))
        };
        let flag = |k: &'static str| -> bool {
            flags.contains(&k) || env.get(&input_var(k)).is_some_and(|v| truthy(&v))
        };
        Ok(Cli {
            command,
            url: value("url"),
            token: value("token").map(Secret),
            name: value("name"),
            labels: value("labels")
                .map(|l| split_labels(&l))
                .unwrap_or_default(),
            runnergroup: value("runnergroup"),
            work: value("work"),
            jitconfig: value("jitconfig").map(Secret),
            unattended: flag("unattended"),
            replace: flag("replace"),
            ephemeral: flag("ephemeral"),
            disableupdate: flag("disableupdate"),
            no_default_labels: flag("no-default-labels"),
            once: flag("once"),
            local: flag("local"),
            version: flag("version"),
            help: flag("help"),
        })
    }
}

/// `a, b,,c` → `["a", "b", "c"]`.
pub fn split_labels(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The runner's environment: a snapshot taken at start, so that reads and what children get
/// never race with anything else in the process.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<OsString, OsString>,
}

impl Env {
    /// The current process environment.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os().collect(),
        }
    }

    /// An environment made of `pairs` (tests).
    pub fn from_pairs<K: Into<OsString>, V: Into<OsString>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value (lossy UTF-8), if set.
    pub fn get(&self, key: &str) -> Option<String> {
        self.vars
            .get(OsStr::new(key))
            .map(|v| v.to_string_lossy().into_owned())
    }

    /// Sets a variable in the snapshot (never in the process).
    pub fn set(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) {
        self.vars.insert(key.into(), value.into());
    }

    /// Loads `KEY=VALUE` lines of the root's `.env` (the real runner does this at start);
    /// blank lines and `#` comments are skipped. A missing file is not an error.
    pub fn load_dotenv(&mut self, path: &Path) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let k = k.trim();
                if !k.is_empty() {
                    self.set(k, v);
                }
            }
        }
    }

    /// What a child process gets: everything but `ACTIONS_RUNNER_INPUT_*`.
    pub fn for_children(&self) -> impl Iterator<Item = (&OsString, &OsString)> {
        self.vars
            .iter()
            .filter(|(k, _)| !k.to_string_lossy().starts_with(INPUT_PREFIX))
    }

    /// A whole-number knob, or `default` when unset or unparsable.
    fn number(&self, key: &str, default: u64) -> u64 {
        self.get(key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    }

    /// A duration knob in whole seconds, or `default` when unset or unparsable.
    pub fn secs(&self, key: &str, default: u64) -> std::time::Duration {
        std::time::Duration::from_secs(self.number(key, default))
    }

    /// A duration knob in milliseconds, or `default` when unset or unparsable.
    pub fn millis(&self, key: &str, default: u64) -> std::time::Duration {
        std::time::Duration::from_millis(self.number(key, default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn argv_options_and_flags() {
        let cli = Cli::resolve(
            &args(&[
                "configure",
                "--unattended",
                "--url",
                "https://github.com/o/r",
                "--token=T",
                "--name",
                "n",
                "--labels",
                "a, b,,c",
                "--runnergroup",
                "G",
                "--work",
                "w",
                "--replace",
                "--ephemeral",
                "--disableupdate",
                "--no-default-labels",
            ]),
            &Env::default(),
        )
        .unwrap();
        assert_eq!(cli.command, Some(Command::Configure));
        assert_eq!(cli.url.as_deref(), Some("https://github.com/o/r"));
        assert_eq!(cli.token, Some(Secret("T".into())));
        assert_eq!(cli.name.as_deref(), Some("n"));
        assert_eq!(cli.labels, vec!["a", "b", "c"]);
        assert_eq!(cli.runnergroup.as_deref(), Some("G"));
        assert_eq!(cli.work.as_deref(), Some("w"));
        assert!(cli.unattended && cli.replace && cli.ephemeral);
        assert!(cli.disableupdate && cli.no_default_labels);
        assert!(!cli.once && !cli.local);
    }

    #[test]
    fn env_inputs_fill_in_and_argv_wins() {
        let env = Env::from_pairs([
            ("ACTIONS_RUNNER_INPUT_TOKEN", "from-env"),
            ("ACTIONS_RUNNER_INPUT_URL", "https://github.com/o"),
            ("ACTIONS_RUNNER_INPUT_NAME", "env-name"),
            ("ACTIONS_RUNNER_INPUT_LABELS", "x,y"),
            ("ACTIONS_RUNNER_INPUT_EPHEMERAL", "true"),
            ("ACTIONS_RUNNER_INPUT_NO_DEFAULT_LABELS", "TRUE"),
            ("ACTIONS_RUNNER_INPUT_REPLACE", "false"),
            ("ACTIONS_RUNNER_INPUT_JITCONFIG", "blob"),
            ("ACTIONS_RUNNER_INPUT_WORK", ""),
        ]);
        let cli = Cli::resolve(&args(&["configure", "--name", "argv-name"]), &env).unwrap();
        assert_eq!(cli.token, Some(Secret("from-env".into())));
        assert_eq!(cli.url.as_deref(), Some("https://github.com/o"));
        assert_eq!(cli.name.as_deref(), Some("argv-name"));
        assert_eq!(cli.labels, vec!["x", "y"]);
        assert!(cli.ephemeral && cli.no_default_labels && !cli.replace);
        assert_eq!(cli.jitconfig, Some(Secret("blob".into())));
        // An empty variable is the same as none.
        assert_eq!(cli.work, None);
    }

    #[test]
    fn no_command_and_version() {
        let cli = Cli::resolve(&args(&["--version"]), &Env::default()).unwrap();
        assert_eq!(cli.command, None);
        assert!(cli.version);
        let cli = Cli::resolve(&args(&["run", "--once"]), &Env::default()).unwrap();
        assert_eq!(cli.command, Some(Command::Run));
        assert!(cli.once);
    }

    #[test]
    fn unknown_input_and_missing_values_are_refused() {
        let e = Cli::resolve(&args(&["run", "--bogus"]), &Env::default()).unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
        let e = Cli::resolve(&args(&["frobnicate"]), &Env::default()).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
        let e = Cli::resolve(&args(&["configure", "--token"]), &Env::default()).unwrap_err();
        assert!(e.contains("--token"), "{e}");
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let cli = Cli::resolve(
            &args(&["configure", "--token", "hunter2", "--jitconfig", "sekrit"]),
            &Env::default(),
        )
        .unwrap();
        let dbg = format!("{cli:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("sekrit"), "{dbg}");
    }

    #[test]
    fn children_never_see_inputs() {
        let env = Env::from_pairs([
            ("ACTIONS_RUNNER_INPUT_TOKEN", "t"),
            ("PATH", "/bin"),
            ("ACTIONS_RUNNER_HOOK_JOB_STARTED", "/x"),
        ]);
        let keys: Vec<String> = env
            .for_children()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(keys, vec!["ACTIONS_RUNNER_HOOK_JOB_STARTED", "PATH"]);
    }

    #[test]
    fn dotenv_lines() {
        let dir = std::env::temp_dir().join(format!("standin-dotenv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(".env");
        std::fs::write(&path, "# comment\n\nA=1\nB = x=y\nLANG=C.UTF-8\n").unwrap();
        let mut env = Env::from_pairs([("A", "0")]);
        env.load_dotenv(&path);
        env.load_dotenv(&dir.join("missing"));
        assert_eq!(env.get("A").as_deref(), Some("1"));
        assert_eq!(env.get("B").as_deref(), Some(" x=y"));
        assert_eq!(env.get("LANG").as_deref(), Some("C.UTF-8"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn knobs() {
        let env = Env::from_pairs([("S", "3"), ("M", "250"), ("BAD", "x")]);
        assert_eq!(env.secs("S", 9).as_secs(), 3);
        assert_eq!(env.secs("BAD", 9).as_secs(), 9);
        assert_eq!(env.millis("M", 1).as_millis(), 250);
        assert_eq!(env.millis("NONE", 1).as_millis(), 1);
    }
}
