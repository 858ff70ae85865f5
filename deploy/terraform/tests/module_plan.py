"""Shared by the offline tests of the Terraform module in deploy/terraform (the test_*.py files
here, run by scripts/lint-terraform): the module loaded once, `plan` for a set of variables, the
stubs and fixtures, and helpers that read a plan (instances, containers, policy documents, IAM
requests, preconditions, the controller's pool file).

No provider and no AWS account: python-hcl2 parses every .tf file, and hcl_eval.py evaluates the
parsed expressions the way `terraform plan` would, for a given set of variables. So the
`for_each = local.runners` of the per-runner resources is computed from locals.tf itself (not
re-implemented here), and the tests assert, for standalone with the default repository, standalone
with two repositories, and org:

- the resource addresses that would exist, including the seed's
  `aws_ecs_service.github_runner["your-repository-name"]` and `...["org"]` for `-replace`;
- the log group names, the container (image entrypoint kept, no ECS `user`: the image's root
  agent starts the jobs as RUNNER_USER=runner; stopTimeout 120, awslogs), credentials as
  `secrets` only, the network (no public IP, the private subnets);
- the IAM policies: exactly the mode's parameters under the prefix, kms:Decrypt through SSM only,
  logs on the runners' own groups, no wildcard action; one task role per runner key, whose
  Allow statements (evaluated against requests by `allows`) take one-shot JIT parameters from its
  own pool's folder and no other's; image pulls from exactly the ECR repository of runner_image,
  or with exactly repository_credentials_secret_arn;
- with enable_controller (each mode again): no runner services and no credential in the runner
  tasks or their execution role, the controller's service, task definition and roles, and its
  generated pool file, parsed with tomllib and checked against the controller's own validation
  rules (crates/hangar/src/controller/config.rs), and its own security group (the runners' groups
  never admit a job to its HTTP port).
- with pool_shapes and docker_capacity (test_shapes.py): the pools <key>-<shape>, their task
  definitions (Fargate sizes, ARM64, the Docker daemon sidecar), task roles and pool-file lines,
  the EC2 capacity (launch template, Auto Scaling group, instance role, capacity provider and the
  cluster's provider list), and that their defaults leave every other plan unchanged.

Data sources answer from STUBS below, standing in for what a plan would read from AWS. When the
real `terraform` binary is on PATH, TerraformAgrees (test_terraform_agrees.py) also has Terraform
itself evaluate the variables and locals (data references replaced by the same stubs) and
compares, so the mirror is checked against the real thing.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import Evaluator, Module, Plan, Unknown, to_plain  # noqa: E402

MODULE_DIR = Path(__file__).resolve().parent.parent

ACCOUNT = "123456789012"
SSM_MANAGED_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/00000000-0000-0000-0000-00000000a55a"
VPC_ID = "vpc-0123456789abcdef0"
STUBS = {
    ("data", "aws_partition", "current"): {"partition": "aws"},
    ("data", "aws_caller_identity", "current"): {"account_id": ACCOUNT},
    ("data", "aws_kms_alias", "ssm"): {"target_key_arn": SSM_MANAGED_KEY},
    # The first private subnet's VPC, where the controller's own security group is made.
    ("data", "aws_subnet", "controller"): {"vpc_id": VPC_ID},
}

PREFIX = "/your-app-name/github-integration"
# The default runner_image, an ECR image (AWS's example account), and its repository.
DEFAULT_IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/hangar-runner:latest"
DEFAULT_REPOSITORY = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/hangar-runner"
REGISTRY_SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:hangar/registry-AbC123"
PARAM_ARN = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter{PREFIX}"

# The seed's interface: variable -> default ("required" for none).
SEED_DEFAULTS = {
    "runner_type": "required",
    "github_repository_name": ["your-repository-name"],
    "github_organization": "your-organization",
    "ssm_parameter_prefix": PREFIX,
    "ecs_cluster_name": "your-ecs-cluster-name",
    "aws_region": "us-east-1",
    "desired_count": 1,
    "runner_name_prefix": "aws-github-runner",
    "runner_labels": ["your-runner-label"],
}
# Also part of the interface, with defaults that are placeholders or Hangar's choices.
OTHER_VARIABLES = {
    "private_subnet_ids",
    "security_group_ids",
    "runner_image",
    "log_retention_in_days",
    "drain_timeout_seconds",
    "kms_key_arn",
    "enable_execute_command",
    "enable_jit_config_parameters",
    "task_cpu",
    "task_memory",
    "enable_controller",
    "controller_min_idle",
    "controller_max",
    "repository_credentials_secret_arn",
}

STANDALONE = {"runner_type": "standalone"}
TWO_REPOS = {"runner_type": "standalone", "github_repository_name": ["your-repository-name", "another-repo"]}
ORG = {"runner_type": "org"}
MODES = {"standalone (default repository)": STANDALONE, "standalone (two repositories)": TWO_REPOS, "org": ORG}
# The same three with the autoscaler.
CONTROLLER_MODES = {f"{label} + controller": {**variables, "enable_controller": True} for label, variables in MODES.items()}

# The credential secrets each mode injects (environment name: parameter ARN), in the module's order.
CREDENTIAL_SECRETS = {
    "standalone": {"GITHUB_PAT": f"{PARAM_ARN}/pat"},
    "org": {
        "GITHUB_APP_CLIENT_ID": f"{PARAM_ARN}/client-id",
        "GITHUB_APP_INSTALLATION_ID": f"{PARAM_ARN}/installation-id",
        "GITHUB_APP_PRIVATE_KEY": f"{PARAM_ARN}/private-key",
    },
}
CREDENTIAL_NAMES = {name for secrets in CREDENTIAL_SECRETS.values() for name in secrets}


MODULE = Module.load(MODULE_DIR)

# What enable_controller adds (besides the forced one-shot JIT policy on the runners' task role).
CONTROLLER_ADDRESSES = {
    "aws_ssm_parameter.controller_config[0]",
    "aws_cloudwatch_log_group.controller[0]",
    "aws_ecs_task_definition.controller[0]",
    "aws_ecs_service.controller[0]",
    "aws_iam_role.controller_execution[0]",
    "aws_iam_role.controller_task[0]",
    "aws_iam_role_policy.controller_execution[0]",
    "aws_iam_role_policy.controller_task[0]",
    # Its own security group (no inbound rule unless controller_ingress_* lists sources).
    "aws_security_group.controller[0]",
    "aws_vpc_security_group_egress_rule.controller[0]",
}


def plan(variables: dict) -> Plan:
    p = Plan(MODULE, variables, STUBS)
    errors = p.validation_errors()
    if errors:
        raise AssertionError(f"validation failed for {variables}: {errors}")
    return p


def expected_keys(variables: dict) -> list:
    return ["org"] if variables["runner_type"] == "org" else variables.get("github_repository_name", SEED_DEFAULTS["github_repository_name"])


def resource_addresses(p: Plan) -> set:
    return set(p.all_instances("resource"))


def instance(p: Plan, address: str):
    instances = {**p.all_instances("resource"), **p.all_instances("data")}
    if address not in instances:
        raise AssertionError(f"{address} not in the plan: {sorted(instances)}")
    return instances[address]


def container(p: Plan, key: str) -> dict:
    definition = instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate()
    containers = json.loads(definition["container_definitions"])
    assert len(containers) == 1, containers
    return containers[0]


def statements(p: Plan, document: str) -> dict:
    """sid -> evaluated statement of a data.aws_iam_policy_document."""
    doc = to_plain(instance(p, f"data.aws_iam_policy_document.{document}").evaluate())
    out = {}
    for statement in doc.get("statement", []):
        assert statement.get("sid"), f"{document}: every statement has a sid"
        out[statement["sid"]] = statement
    return out


def role_documents(p: Plan, role: str) -> dict:
    """address -> evaluated policy document, for every inline policy attached to `role`."""
    out = {}
    for address, inst in p.all_instances("resource").items():
        if address.startswith("aws_iam_role_policy."):
            attached = inst.evaluate()
            if attached["role"] == Unknown(f"{role}.id"):
                document = attached["policy"].ref.removesuffix(".json")
                out[document] = to_plain(instance(p, document).evaluate())
    return out


def all_policy_documents(p: Plan) -> dict:
    return {
        address: to_plain(inst.evaluate())
        for address, inst in p.all_instances("data").items()
        if address.startswith("data.aws_iam_policy_document.")
    }


################################################################################
# IAM requests simulated against the evaluated policy documents; failing preconditions
################################################################################


def iam_pattern(pattern: str) -> re.Pattern:
    """An IAM resource or condition pattern: '*' is any run of characters ('/' included), '?' one."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z", re.S)


def condition_holds(condition: dict, context: dict) -> bool:
    if condition["variable"] not in context:
        return False
    value = context[condition["variable"]]
    if condition["test"] in ("StringEquals", "ArnEquals"):
        return value in condition["values"]
    if condition["test"] in ("StringLike", "ArnLike"):
        return any(iam_pattern(v).match(value) for v in condition["values"])
    raise AssertionError(f"condition {condition['test']} is not simulated here")


def allows(documents: dict, action: str, resource: str, context: dict | None = None) -> bool:
    """Whether any Allow statement of these policy documents grants `action` on `resource` with
    the request `context` (the module writes no Deny and no wildcard action)."""
    for document in documents.values():
        for statement in document.get("statement", []):
            if statement["effect"] != "Allow" or action not in statement["actions"]:
                continue
            if not any(iam_pattern(r).match(resource) for r in statement["resources"]):
                continue
            if all(condition_holds(c, context or {}) for c in statement.get("condition", [])):
                return True
    return False


def ssm_decrypt_context(parameter_arn: str) -> dict:
    """What KMS sees when SSM decrypts a SecureString for its caller."""
    return {"kms:ViaService": "ssm.us-east-1.amazonaws.com", "kms:EncryptionContext:PARAMETER_ARN": parameter_arn}


def preconditions_of(p: Plan, rtype: str, name: str) -> list:
    """The error messages of the failing preconditions of every instance of a resource."""
    failing = []
    for inst in p.instances(p.ref("resource", rtype, name)).values():
        ev = inst.evaluator()
        for lifecycle in inst.ref.block.nested("lifecycle"):
            for condition in lifecycle.nested("precondition"):
                if not ev.eval(condition.attrs["condition"]):
                    failing.append(ev.eval(condition.attrs["error_message"]))
    return failing


################################################################################
# The controller's pool file and container
################################################################################


def pool_file(p: Plan) -> dict:
    """The generated pool file as stored in the parameter, parsed as the controller would."""
    parameter = instance(p, "aws_ssm_parameter.controller_config[0]").evaluate()
    return tomllib.loads(parameter["value"])


def preconditions_failing(p: Plan) -> list:
    """The error messages of the config parameter's preconditions that fail (as `plan` reports)."""
    ref = p.ref("resource", "aws_ssm_parameter", "controller_config")
    ev = Evaluator(p, count={"index": 0})
    failing = []
    for lifecycle in ref.block.nested("lifecycle"):
        for condition in lifecycle.nested("precondition"):
            if not ev.eval(condition.attrs["condition"]):
                failing.append(ev.eval(condition.attrs["error_message"]))
    return failing


def controller_container(p: Plan) -> dict:
    definition = instance(p, "aws_ecs_task_definition.controller[0]").evaluate()
    (c,) = json.loads(definition["container_definitions"])
    return c
