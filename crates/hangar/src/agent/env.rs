//! The runner's environment. The runner (and so every job step) starts from an empty
//! environment plus an allow-list, never from the agent's: the agent holds the PAT or App key,
//! the SSM prefix, the task role's credential URI and the JIT blob, and none of them may reach a
//! job. Operators add variables their jobs need with `--pass-env`; credential-bearing names are
//! refused even then. The supervisor adds its own (`extra`): HOME, USER, the hook scripts, and
//! for the pool's Docker either `DOCKER_HOST` (a pool with a daemon: the runner and its jobs find
//! the sidecar by it) or a `PATH` with the `docker` stub first (a pool without; see
//! `agent::docker`).

/// Passed through when set: what a shell and common tools need, and proxy settings.
pub const ALWAYS_PASSED: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "HOSTNAME",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Never passed, whatever `--pass-env` says: credentials of the agent, or handles to them (the
/// `RUNNER_JIT_CONFIG` prefix covers the blob itself and the names of its one-shot parameter and
/// file).
pub fn is_forbidden(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "GITHUB_APP_",
        "AWS_",
        "ECS_",
        "ACTIONS_RUNNER_INPUT_",
        "RUNNER_JIT_CONFIG",
        "HANGAR_SSM",
    ];
    const NAMES: &[&str] = &["GITHUB_PAT", "GITHUB_TOKEN", "GH_TOKEN"];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The environment for the runner process: allow-listed and `--pass-env` variables from the
/// agent's environment (read through `get`), then `extra` (set by the agent: HOME, USER, hook
/// paths, ...), which wins.
pub fn runner_env(
    get: &dyn Fn(&str) -> Option<String>,
    pass: &[String],
    extra: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let push = |k: &str, v: String, out: &mut Vec<(String, String)>| {
        out.retain(|(name, _)| name != k);
        out.push((k.to_string(), v));
    };
    for name in ALWAYS_PASSED
        .iter()
        .copied()
        .chain(pass.iter().map(String::as_str))
    {
        if is_forbidden(name) {
            continue;
        }
        if let Some(v) = get(name) {
            push(name, v, &mut out);
        }
    }
    for (k, v) in extra {
        push(k, v.clone(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_names_pass_and_credentials_never_do() {
        let agent_env = |name: &str| -> Option<String> {
            match name {
                "PATH" => Some("/usr/bin".into()),
                "GITHUB_PAT" => Some("ghp_secret".into()),
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" => Some("/v2/creds".into()),
                "MY_TOOL_HOME" => Some("/opt/tool".into()),
                _ => None,
            }
        };
        let pass = vec![
            "MY_TOOL_HOME".to_string(),
            "GITHUB_PAT".to_string(),
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI".to_string(),
        ];
        let extra = vec![
            ("HOME".to_string(), "/home/runner".to_string()),
            ("PATH".to_string(), "/x".to_string()),
        ];
        let env = runner_env(&agent_env, &pass, &extra);
        assert_eq!(
            env,
            vec![
                ("MY_TOOL_HOME".to_string(), "/opt/tool".to_string()),
                ("HOME".to_string(), "/home/runner".to_string()),
                ("PATH".to_string(), "/x".to_string()),
            ]
        );
    }

    #[test]
    fn forbidden_names() {
        for name in [
            "GITHUB_PAT",
            "GITHUB_APP_PRIVATE_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "ECS_AGENT_URI",
            "ACTIONS_RUNNER_INPUT_TOKEN",
            "RUNNER_JIT_CONFIG",
            "RUNNER_JIT_CONFIG_PARAMETER",
            "RUNNER_JIT_CONFIG_FILE",
            "HANGAR_SSM_PREFIX",
        ] {
            assert!(is_forbidden(name), "{name}");
        }
        for name in ["PATH", "GITHUB_WORKSPACE", "RUNNER_NAME"] {
            assert!(!is_forbidden(name), "{name}");
        }
    }
}
