//! Role permissions: the grants a role needs, asked of IAM's policy simulator through
//! [`AwsInspect::simulate`] (once per resource and context), and the verdict on the answer.

use super::checks::not_checked;
use super::{AwsInspect, ContextValue, Decision, Evaluation, InspectError, Simulation};
use crate::report::Checks;

/// One permission a role needs: `action` on `resource`, with these condition values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Grant {
    pub action: &'static str,
    pub resource: String,
    pub context: Vec<ContextValue>,
}

impl Grant {
    pub(super) fn new(action: &'static str, resource: &str) -> Grant {
        Grant {
            action,
            resource: resource.to_string(),
            context: Vec::new(),
        }
    }
}

/// The grants `role_arn` lacks, asked of the policy simulator once per resource (and context).
pub(super) async fn missing_grants<A: AwsInspect + Sync>(
    aws: &A,
    role_arn: &str,
    grants: &[Grant],
) -> Result<Vec<Evaluation>, InspectError> {
    let mut groups: Vec<(&str, &[ContextValue], Vec<&'static str>)> = Vec::new();
    for grant in grants {
        match groups
            .iter_mut()
            .find(|(resource, context, _)| *resource == grant.resource && *context == grant.context)
        {
            Some((_, _, actions)) => actions.push(grant.action),
            None => groups.push((&grant.resource, &grant.context, vec![grant.action])),
        }
    }
    let mut missing = Vec::new();
    for (resource, context, actions) in groups {
        let answer = aws
            .simulate(&Simulation {
                role_arn: role_arn.to_string(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
                resource: resource.to_string(),
                context: context.to_vec(),
            })
            .await?;
        for action in actions {
            // An action IAM gave no decision for is not allowed; any deny among several
            // decisions (one per resource) wins.
            let decisions: Vec<Decision> = answer
                .iter()
                .filter(|e| e.action.eq_ignore_ascii_case(action))
                .map(|e| e.decision)
                .collect();
            let decision = if decisions.contains(&Decision::ExplicitDeny) {
                Decision::ExplicitDeny
            } else if !decisions.is_empty() && decisions.iter().all(|d| *d == Decision::Allowed) {
                Decision::Allowed
            } else {
                Decision::ImplicitDeny
            };
            if decision != Decision::Allowed {
                missing.push(Evaluation {
                    action: action.to_string(),
                    resource: resource.to_string(),
                    decision,
                });
            }
        }
    }
    Ok(missing)
}

/// A role and what it is checked for.
pub(super) struct RoleUse<'a> {
    pub check: &'static str,
    /// "execution role" or "task role".
    pub label: &'static str,
    /// The task definition field naming it.
    pub field: &'static str,
    pub role_arn: &'a str,
    /// The Terraform resources in deploy/terraform/iam.tf that grant it.
    pub terraform: &'static str,
}

/// The verdict on a role's simulated grants.
pub(super) fn role_verdict(
    checks: &mut Checks,
    role: &RoleUse<'_>,
    result: Result<Vec<Evaluation>, InspectError>,
    allowed: String,
) {
    match result {
        Ok(missing) if missing.is_empty() => checks.pass(role.check, allowed),
        Ok(missing) => {
            let found: Vec<String> = missing
                .iter()
                .map(|e| format!("{} on {} ({})", e.action, e.resource, e.decision.as_str()))
                .collect();
            let mut actions: Vec<&str> = missing.iter().map(|e| e.action.as_str()).collect();
            actions.dedup();
            let mut resources: Vec<&str> = missing.iter().map(|e| e.resource.as_str()).collect();
            resources.dedup();
            let explicit = if missing.iter().any(|e| e.decision == Decision::ExplicitDeny) {
                " and lift the explicit Deny (a Deny statement, the role's permissions boundary or \
                 an organization SCP)"
            } else {
                ""
            };
            checks.fail(
                role.check,
                format!(
                    "{} {} is not allowed {}",
                    role.label,
                    role.role_arn,
                    found.join("; ")
                ),
                format!(
                    "allow {} on {} to {}{explicit}; the Terraform module grants exactly these \
                     (deploy/terraform/iam.tf: {})",
                    actions.join(", "),
                    resources.join(", "),
                    role.role_arn,
                    role.terraform
                ),
            );
        }
        Err(InspectError::NotFound { .. }) => checks.fail(
            role.check,
            format!("{} {} does not exist", role.label, role.role_arn),
            format!(
                "create it (deploy/terraform/iam.tf: {}), or set the task definition's {} to an \
                 existing role",
                role.terraform, role.field
            ),
        ),
        Err(InspectError::Denied { code, message, .. }) => checks.warn(
            role.check,
            format!(
                "not checked: AWS denied iam:SimulatePrincipalPolicy on {} ({code}: {message})",
                role.role_arn
            ),
            format!(
                "allow iam:SimulatePrincipalPolicy on {} to the identity running the preflight to \
                 have the role's permissions checked (the controller itself does not need it)",
                role.role_arn
            ),
        ),
        Err(err) => not_checked(checks, role.check, &err),
    }
}
