//! Where a runner lives on GitHub: one repository (standalone mode) or a whole organization
//! (organization mode). Every runner-related API path and the runner's `--url` derive from a
//! [`Scope`], so the two modes never drift apart in how they build URLs.

use std::fmt;

/// A repository or an organization, validated so it is safe to put in a URL path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Repo { owner: String, repo: String },
    Org { org: String },
}

/// Why a `--repo` or `--org` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error(
        "repository {0:?} is not of the form OWNER/REPO (e.g. your-organization/your-repository-name)"
    )]
    NotOwnerSlashRepo(String),
    #[error(
        "{what} {value:?} contains characters GitHub does not allow (letters, digits, '-', '_' and '.' only)"
    )]
    BadName { what: &'static str, value: String },
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl Scope {
    /// Parses `OWNER/REPO`.
    pub fn repo(full_name: &str) -> Result<Scope, ScopeError> {
        let (owner, repo) = full_name
            .split_once('/')
            .ok_or_else(|| ScopeError::NotOwnerSlashRepo(full_name.to_string()))?;
        for (what, value) in [("owner", owner), ("repository", repo)] {
            if !valid_name(value) {
                return Err(ScopeError::BadName {
                    what,
                    value: value.to_string(),
                });
            }
        }
        Ok(Scope::Repo {
            owner: owner.to_string(),
            repo: repo.to_string(),
        })
    }

    /// Validates an organization login.
    pub fn org(org: &str) -> Result<Scope, ScopeError> {
        if !valid_name(org) || org.contains('.') {
            return Err(ScopeError::BadName {
                what: "organization",
                value: org.to_string(),
            });
        }
        Ok(Scope::Org {
            org: org.to_string(),
        })
    }

    /// The account that owns the scope: the organization, or the repository's owner.
    pub fn owner(&self) -> &str {
        match self {
            Scope::Repo { owner, .. } => owner,
            Scope::Org { org } => org,
        }
    }

    pub fn is_org(&self) -> bool {
        matches!(self, Scope::Org { .. })
    }

    /// The REST path prefix: `repos/OWNER/REPO` or `orgs/ORG`.
    pub fn api_path(&self) -> String {
        match self {
            Scope::Repo { owner, repo } => format!("repos/{owner}/{repo}"),
            Scope::Org { org } => format!("orgs/{org}"),
        }
    }

    /// The URL a runner is configured with (`config.sh --url`), under the given web base.
    pub fn runner_url(&self, web_base: &str) -> String {
        let base = web_base.trim_end_matches('/');
        match self {
            Scope::Repo { owner, repo } => format!("{base}/{owner}/{repo}"),
            Scope::Org { org } => format!("{base}/{org}"),
        }
    }

    /// The settings page where a person sees this scope's runners.
    pub fn runners_settings_url(&self, web_base: &str) -> String {
        let base = web_base.trim_end_matches('/');
        match self {
            Scope::Repo { owner, repo } => {
                format!("{base}/{owner}/{repo}/settings/actions/runners")
            }
            Scope::Org { org } => format!("{base}/organizations/{org}/settings/actions/runners"),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repo { owner, repo } => write!(f, "repository {owner}/{repo}"),
            Scope::Org { org } => write!(f, "organization {org}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_both_kinds() {
        let r = Scope::repo("your-organization/your-repository-name").unwrap();
        assert_eq!(r.api_path(), "repos/your-organization/your-repository-name");
        assert_eq!(
            r.runner_url("https://github.com/"),
            "https://github.com/your-organization/your-repository-name"
        );
        assert_eq!(r.owner(), "your-organization");
        let o = Scope::org("your-organization").unwrap();
        assert_eq!(o.api_path(), "orgs/your-organization");
        assert_eq!(
            o.runners_settings_url("https://ghe.example.com"),
            "https://ghe.example.com/organizations/your-organization/settings/actions/runners"
        );
        assert!(o.is_org() && !r.is_org());
    }

    #[test]
    fn rejects_names_that_would_escape_the_path() {
        assert!(matches!(
            Scope::repo("just-a-repo"),
            Err(ScopeError::NotOwnerSlashRepo(_))
        ));
        for bad in ["a/../b", "a/b/c", "a/", "/b", "a/b?x=1", "a b/c", "a/.."] {
            assert!(Scope::repo(bad).is_err(), "{bad} accepted");
        }
        for bad in ["", "my org", "org/x", "a.b"] {
            assert!(Scope::org(bad).is_err(), "{bad} accepted");
        }
    }
}
