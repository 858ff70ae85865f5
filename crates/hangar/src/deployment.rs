//! The names a deployment gives things, in one place: the Terraform module (`deploy/terraform`)
//! and the operator commands (`status`, `logs`) must agree on them. Standalone mode has one pool
//! per repository (key = repository name), organization mode one pool (key `org`); each pool has
//! an ECS service `github-runner-<type>-<key>` and a log group
//! `awslogs-github-runner-<type>-<key>`, as the seed names its log groups.

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::github::{Scope, ScopeError};

/// Every runner log group starts with this.
pub const LOG_GROUP_PREFIX: &str = "awslogs-github-runner-";
/// Every runner service starts with this.
pub const SERVICE_PREFIX: &str = "github-runner-";

/// The seed's `runner_type`, plus `all` for commands that can show both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerType {
    Standalone,
    Org,
    All,
}

/// Where the runners are deployed: flags of `status` and `logs` (env vars for scripts).
#[derive(Clone, Debug, Args)]
pub struct DeploymentArgs {
    /// Which runners: `standalone` (one per repository), `org`, or `all`.
    #[arg(long, value_enum, env = "RUNNER_TYPE", default_value = "all")]
    pub runner_type: RunnerType,
    /// The organization (owner of the repositories).
    #[arg(long, env = "GITHUB_ORG", default_value = "your-organization")]
    pub org: String,
    /// Repository names of standalone runners (repeat or comma-separate).
    #[arg(
        long = "repo",
        env = "GITHUB_REPOSITORY_NAMES",
        value_delimiter = ',',
        default_value = "your-repository-name"
    )]
    pub repos: Vec<String>,
    /// The ECS cluster the runners run in.
    #[arg(long, env = "HANGAR_CLUSTER", default_value = "your-ecs-cluster-name")]
    pub cluster: String,
}

/// One service's worth of runners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// `standalone` or `org`.
    pub runner_type: &'static str,
    /// The repository name, or `org`.
    pub key: String,
    #[serde(serialize_with = "serialize_scope")]
    pub scope: Scope,
    pub service: String,
    pub log_group: String,
}

fn serialize_scope<S: serde::Serializer>(scope: &Scope, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&scope.to_string())
}

fn pool(runner_type: &'static str, key: &str, scope: Scope) -> Pool {
    Pool {
        runner_type,
        key: key.to_string(),
        scope,
        // ECS service names take no '.', which repository names may have.
        service: format!("{SERVICE_PREFIX}{runner_type}-{}", key.replace('.', "-")),
        log_group: format!("{LOG_GROUP_PREFIX}{runner_type}-{key}"),
    }
}

/// A deployment as the flags name it, validated.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub runner_type: RunnerType,
    pub cluster: String,
    pub pools: Vec<Pool>,
}

impl DeploymentArgs {
    /// The deployment the flags name; a repository or organization name that is not valid is a
    /// configuration error.
    pub fn resolve(&self) -> Result<Deployment, ScopeError> {
        Ok(Deployment {
            runner_type: self.runner_type,
            cluster: self.cluster.clone(),
            pools: self.pools()?,
        })
    }

    /// The pools the flags name, validated.
    fn pools(&self) -> Result<Vec<Pool>, ScopeError> {
        let mut out = Vec::new();
        if matches!(self.runner_type, RunnerType::Standalone | RunnerType::All) {
            for repo in self
                .repos
                .iter()
                .map(|r| r.trim())
                .filter(|r| !r.is_empty())
            {
                let name = repo.rsplit('/').next().unwrap_or(repo);
                out.push(pool(
                    "standalone",
                    name,
                    Scope::repo(&format!("{}/{name}", self.org))?,
                ));
            }
        }
        if matches!(self.runner_type, RunnerType::Org | RunnerType::All) {
            out.push(pool("org", "org", Scope::org(&self.org)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(t: RunnerType, repos: &[&str]) -> DeploymentArgs {
        DeploymentArgs {
            runner_type: t,
            org: "your-organization".into(),
            repos: repos.iter().map(|r| r.to_string()).collect(),
            cluster: "c".into(),
        }
    }

    #[test]
    fn names_follow_the_seed() {
        let pools = args(RunnerType::All, &["your-repository-name", "o/another-repo"])
            .pools()
            .unwrap();
        let names: Vec<(&str, &str, &str)> = pools
            .iter()
            .map(|p| (p.key.as_str(), p.service.as_str(), p.log_group.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                (
                    "your-repository-name",
                    "github-runner-standalone-your-repository-name",
                    "awslogs-github-runner-standalone-your-repository-name"
                ),
                (
                    "another-repo",
                    "github-runner-standalone-another-repo",
                    "awslogs-github-runner-standalone-another-repo"
                ),
                (
                    "org",
                    "github-runner-org-org",
                    "awslogs-github-runner-org-org"
                ),
            ]
        );
        assert_eq!(
            pools[0].scope,
            Scope::repo("your-organization/your-repository-name").unwrap()
        );
        assert_eq!(pools[2].scope, Scope::org("your-organization").unwrap());
        assert_eq!(args(RunnerType::Org, &["x"]).pools().unwrap().len(), 1);
        let dotted = args(RunnerType::Standalone, &["site.github.io"])
            .pools()
            .unwrap();
        assert_eq!(dotted[0].service, "github-runner-standalone-site-github-io");
        assert_eq!(
            dotted[0].log_group,
            "awslogs-github-runner-standalone-site.github.io"
        );
        assert!(args(RunnerType::Standalone, &["bad name"]).pools().is_err());
    }
}
