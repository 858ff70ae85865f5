"""Offline tests of the Terraform module in deploy/terraform (run by scripts/lint-terraform).

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
  rules (crates/hangar/src/controller/config.rs).

Data sources answer from STUBS below, standing in for what a plan would read from AWS. When the
real `terraform` binary is on PATH, TerraformAgrees also has Terraform itself evaluate the
variables and locals (data references replaced by the same stubs) and compares, so the mirror is
checked against the real thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import Evaluator, Module, Plan, Unknown, to_plain  # noqa: E402

MODULE_DIR = Path(__file__).resolve().parent.parent

ACCOUNT = "123456789012"
SSM_MANAGED_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/00000000-0000-0000-0000-00000000a55a"
STUBS = {
    ("data", "aws_partition", "current"): {"partition": "aws"},
    ("data", "aws_caller_identity", "current"): {"account_id": ACCOUNT},
    ("data", "aws_kms_alias", "ssm"): {"target_key_arn": SSM_MANAGED_KEY},
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
# Parsing and the variables
################################################################################


class Parsing(unittest.TestCase):
    def test_every_tf_file_parses_and_declares_something(self):
        files = sorted(p.name for p in MODULE_DIR.glob("*.tf"))
        for name in ["versions.tf", "variables.tf", "locals.tf", "data.tf", "main.tf", "outputs.tf"]:
            self.assertIn(name, files)
        seen = {b.file for b in MODULE.blocks}
        self.assertEqual(seen, set(files), "a .tf file with no block")

    def test_versions(self):
        terraform = MODULE.of_type("terraform")[0]
        e = Evaluator(Plan(MODULE, STANDALONE, STUBS))
        self.assertEqual(e.eval(terraform.attrs["required_version"]), ">= 1.5")
        providers = e.eval_block(terraform.nested("required_providers")[0])
        self.assertEqual(providers["aws"]["source"], "hashicorp/aws")
        self.assertRegex(providers["aws"]["version"], r"^>= 5\.")


class Variables(unittest.TestCase):
    def test_seed_variables_and_defaults(self):
        variables = MODULE.variables
        for name, default in SEED_DEFAULTS.items():
            with self.subTest(name):
                self.assertIn(name, variables)
                if default == "required":
                    self.assertNotIn("default", variables[name].attrs, f"{name} is required, as in the seed")
                else:
                    self.assertEqual(Plan(MODULE, STANDALONE, STUBS).var_values[name], default)
        for name in OTHER_VARIABLES:
            self.assertIn(name, variables)

    def test_placeholder_network_is_three_private_subnets(self):
        values = Plan(MODULE, STANDALONE, STUBS).var_values
        self.assertEqual(len(values["private_subnet_ids"]), 3)
        self.assertGreaterEqual(len(values["security_group_ids"]), 1)

    def test_every_variable_has_description_type_and_validation(self):
        ev = Evaluator(Plan(MODULE, STANDALONE, STUBS))
        for name, block in MODULE.variables.items():
            with self.subTest(name):
                description = ev.eval(block.attrs["description"]) if "description" in block.attrs else ""
                self.assertGreater(len(description), 20, "a real description")
                self.assertIn("type", block.attrs)
                validations = block.nested("validation")
                self.assertTrue(validations, "at least one validation")
                for v in validations:
                    self.assertIn("condition", v.attrs)
                    self.assertIn("error_message", v.attrs)

    def test_defaults_pass_validation_in_both_modes(self):
        for label, variables in MODES.items():
            with self.subTest(label):
                self.assertEqual(Plan(MODULE, variables, STUBS).validation_errors(), [])

    def test_bad_values_are_rejected(self):
        bad = {
            "runner_type": ["organization", "Standalone", ""],
            "github_repository_name": [[], ["a", "a"], ["my.repo", "my-repo"], ["owner/repo"], ["x" * 101]],
            "github_organization": ["-org", "has space", "x" * 40],
            "ssm_parameter_prefix": ["no-slash", "/trailing/", "/a//b", ""],
            "aws_region": ["US", "us-east", ""],
            "ecs_cluster_name": ["arn:aws:ecs:us-east-1:123456789012:cluster/c", ""],
            "private_subnet_ids": [[], ["subnet-xyz"], ["sg-00000000000000001"], ["subnet-"]],
            "security_group_ids": [[], ["sg-"], ["sg-prod"], ["subnet-00000000000000001"]],
            "desired_count": [-1, 1.5, 101],
            "drain_timeout_seconds": [-1, 86, 120],
            "runner_labels": [["has space"], ["a,b"], [""]],
            "runner_name_prefix": ["", "x" * 32, "bad name"],
            "log_retention_in_days": [2, 10],
            "task_cpu": [100, 3000],
            "task_memory": [256, 1000.5],
            "kms_key_arn": ["alias/aws/ssm", "arn:aws:kms:us-east-1:123456789012:alias/x"],
            "cpu_architecture": ["amd64"],
            "enable_execute_command": [None],
            # Names ECR but is no ECR image URI.
            "runner_image": [
                "12345678901.dkr.ecr.us-east-1.amazonaws.com/hangar-runner:latest",
                f"{ACCOUNT}.dkr.ecr.amazonaws.com/hangar-runner",
                f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/Hangar-Runner:latest",
                f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/hangar-runner@sha256:abc",
                f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/",
                f"{ACCOUNT}.dkr.ecr.us-east-1.example.com/hangar-runner",
                "has space:latest",
            ],
            "repository_credentials_secret_arn": [
                "hangar/registry",
                f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:hangar/registry",
                f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/hangar/registry-AbC123",
                "",
            ],
        }
        for name, values in bad.items():
            for value in values:
                with self.subTest(f"{name}={value!r}"):
                    variables = {"runner_type": "standalone", name: value}
                    errors = Plan(MODULE, variables, STUBS).validation_errors()
                    self.assertTrue(any(e.startswith(f"{name}:") for e in errors), errors)

    def test_good_overrides_are_accepted(self):
        good = {
            "github_repository_name": [["repo.with.dots", "Another_Repo", "x" * 100]],
            "ssm_parameter_prefix": ["/a", "/team.one/github_integration-2"],
            "kms_key_arn": [f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"],
            "drain_timeout_seconds": [0, 85],
            "desired_count": [0, 3],
            "aws_region": ["eu-central-1", "us-gov-west-1"],
            # The short placeholders of the top-level README's deploy guide.
            "private_subnet_ids": [["subnet-aaa", "subnet-bbb", "subnet-ccc"], ["subnet-0123456789abcdef0"]],
            "security_group_ids": [["sg-123"]],
            "runner_image": [
                "ghcr.io/your-organization/hangar-runner:1.2.3",
                "public.ecr.aws/your-alias/hangar-runner:latest",
                "registry.example.com:5000/team/hangar-runner@sha256:" + "a" * 64,
                f"210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/hangar-runner:v1.2_3@sha256:{'0' * 64}",
                f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/hangar-runner",
                f"{ACCOUNT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com/hangar-runner:latest",
            ],
            "repository_credentials_secret_arn": [REGISTRY_SECRET, f"arn:aws-us-gov:secretsmanager:us-gov-west-1:{ACCOUNT}:secret:r-AbC123"],
        }
        for name, values in good.items():
            for value in values:
                with self.subTest(f"{name}={value!r}"):
                    variables = {"runner_type": "standalone", name: value}
                    self.assertEqual(Plan(MODULE, variables, STUBS).validation_errors(), [])


################################################################################
# Addresses of each mode
################################################################################


class Addresses(unittest.TestCase):
    def expected(self, variables: dict) -> set:
        out = {
            "aws_iam_role.execution",
            "aws_iam_role_policy.execution",
        }
        controller = variables.get("enable_controller", False)
        # Pulling the image: ECR permissions for an ECR image, the registry secret otherwise.
        if ".dkr.ecr." in variables.get("runner_image", DEFAULT_IMAGE):
            out.add("aws_iam_role_policy.execution_ecr_pull[0]")
            if controller:
                out.add("aws_iam_role_policy.controller_ecr_pull[0]")
        if variables.get("repository_credentials_secret_arn"):
            out.add("aws_iam_role_policy.execution_registry_credentials[0]")
            if controller:
                out.add("aws_iam_role_policy.controller_registry_credentials[0]")
        if not controller:
            # The fixed services' credentials; the controller's runners have none.
            out |= {"aws_iam_role_policy.execution_credentials[0]"}
        for key in expected_keys(variables):
            for rtype in ("aws_cloudwatch_log_group", "aws_ecs_task_definition"):
                out.add(f'{rtype}.github_runner["{key}"]')
            # One task role per key, with its policies.
            out |= {f'aws_iam_role.task["{key}"]', f'aws_iam_role_policy.task["{key}"]'}
            if controller:
                # Forced on: each runner takes its one-shot JIT configuration from its own folder.
                out.add(f'aws_iam_role_policy.task_jit["{key}"]')
            else:
                out.add(f'aws_ecs_service.github_runner["{key}"]')
        if controller:
            out |= CONTROLLER_ADDRESSES
        return out

    def test_addresses_per_mode(self):
        for label, variables in {**MODES, **CONTROLLER_MODES}.items():
            with self.subTest(label):
                self.assertEqual(resource_addresses(plan(variables)), self.expected(variables))

    def test_controller_off_is_the_default(self):
        for label, variables in MODES.items():
            with self.subTest(label):
                p = plan({**variables, "enable_controller": False})
                self.assertEqual(resource_addresses(p), resource_addresses(plan(variables)))
                self.assertFalse({a for a in resource_addresses(p) if "controller" in a})
                self.assertIsNone(p.output("controller_service_name"))

    def test_seed_replace_addresses_exist(self):
        self.assertIn('aws_ecs_service.github_runner["your-repository-name"]', resource_addresses(plan(STANDALONE)))
        self.assertIn('aws_ecs_service.github_runner["org"]', resource_addresses(plan(ORG)))
        two = resource_addresses(plan(TWO_REPOS))
        self.assertIn('aws_ecs_service.github_runner["another-repo"]', two)

    def test_org_mode_ignores_repositories(self):
        variables = {"runner_type": "org", "github_repository_name": ["a", "b"]}
        self.assertEqual(resource_addresses(plan(variables)), self.expected(ORG))

    def test_optional_policies(self):
        p = plan({**ORG, "enable_execute_command": True, "enable_jit_config_parameters": True})
        addresses = resource_addresses(p)
        self.assertEqual(addresses - self.expected(ORG), {'aws_iam_role_policy.task_exec["org"]', 'aws_iam_role_policy.task_jit["org"]'})
        two = resource_addresses(plan({**TWO_REPOS, "enable_execute_command": True, "enable_jit_config_parameters": True}))
        self.assertEqual(
            two - self.expected(TWO_REPOS),
            {f'aws_iam_role_policy.{name}["{key}"]' for name in ("task_exec", "task_jit") for key in ("your-repository-name", "another-repo")},
        )

    def test_managed_ssm_key_looked_up_only_without_kms_key_arn(self):
        self.assertIn("data.aws_kms_alias.ssm[0]", plan(STANDALONE).all_instances("data"))
        key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        p = plan({**STANDALONE, "kms_key_arn": key})
        self.assertNotIn("data.aws_kms_alias.ssm[0]", p.all_instances("data"))
        self.assertEqual(statements(p, "execution_credentials[0]")["DecryptRunnerCredentials"]["resources"], [key])

    def test_outputs(self):
        for name in [
            "service_names",
            "service_arns",
            "task_definition_arns",
            "log_group_names",
            "log_group_arns",
            "task_execution_role_arn",
            "task_role_arns",
            "jit_parameter_prefixes",
            "service_replace_arguments",
        ]:
            self.assertIn(name, MODULE.outputs)
        for name, block in MODULE.outputs.items():
            self.assertIn("description", block.attrs, name)
        p = plan(TWO_REPOS)
        self.assertEqual(
            p.output("service_replace_arguments"),
            "-replace='aws_ecs_service.github_runner[\"another-repo\"]' "
            "-replace='aws_ecs_service.github_runner[\"your-repository-name\"]'",
        )
        self.assertEqual(
            p.output("log_group_names"),
            {
                "another-repo": "awslogs-github-runner-standalone-another-repo",
                "your-repository-name": "awslogs-github-runner-standalone-your-repository-name",
            },
        )
        self.assertEqual(p.output("ssm_parameter_names"), [f"{PREFIX}/pat"])
        self.assertEqual(
            p.output("task_role_arns"),
            {key: Unknown(f'aws_iam_role.task["{key}"].arn') for key in ("another-repo", "your-repository-name")},
        )
        self.assertEqual(p.output("jit_parameter_prefixes"), {})
        self.assertEqual(
            plan({**TWO_REPOS, "enable_jit_config_parameters": True}).output("jit_parameter_prefixes"),
            {"another-repo": f"{PREFIX}/jit/another-repo", "your-repository-name": f"{PREFIX}/jit/your-repository-name"},
        )
        self.assertEqual(plan({**ORG, "enable_controller": True}).output("jit_parameter_prefixes"), {"org": f"{PREFIX}/jit/org"})
        self.assertEqual(set(plan(ORG).output("service_arns")), {"org"})


################################################################################
# Log groups, task definitions, services
################################################################################


class LogGroups(unittest.TestCase):
    def test_names_and_retention(self):
        cases = {
            "standalone (default repository)": {"your-repository-name": "awslogs-github-runner-standalone-your-repository-name"},
            "standalone (two repositories)": {
                "your-repository-name": "awslogs-github-runner-standalone-your-repository-name",
                "another-repo": "awslogs-github-runner-standalone-another-repo",
            },
            "org": {"org": "awslogs-github-runner-org-org"},
        }
        for label, names in cases.items():
            with self.subTest(label):
                p = plan(MODES[label])
                for key, name in names.items():
                    group = instance(p, f'aws_cloudwatch_log_group.github_runner["{key}"]').evaluate()
                    self.assertEqual(group["name"], name)
                    self.assertEqual(group["retention_in_days"], 30)
                    self.assertIsNone(group["kms_key_id"])
                    self.assertEqual(container(p, key)["logConfiguration"]["options"]["awslogs-group"], name)

    def test_retention_and_key_follow_variables(self):
        key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        p = plan({**ORG, "log_retention_in_days": 365, "cloudwatch_log_group_kms_key_id": key})
        group = instance(p, 'aws_cloudwatch_log_group.github_runner["org"]').evaluate()
        self.assertEqual((group["retention_in_days"], group["kms_key_id"]), (365, key))


class TaskDefinitions(unittest.TestCase):
    def test_container_per_mode(self):
        for label, variables in MODES.items():
            for key in expected_keys(variables):
                with self.subTest(f"{label}: {key}"):
                    p = plan(variables)
                    c = container(p, key)
                    self.assertEqual(c["image"], p.var_values["runner_image"])
                    self.assertTrue(c["essential"])
                    self.assertEqual(c["stopTimeout"], 120)
                    # The image's default user (root) runs tini and hangar agent, which holds the
                    # credentials; the agent starts the runner and its jobs as RUNNER_USER (uid 1001).
                    self.assertNotIn("user", c, "no ECS user: the agent must be root to keep the credentials from the jobs")
                    env = {e["name"]: e["value"] for e in c["environment"]}
                    self.assertEqual(env["RUNNER_USER"], "runner")
                    self.assertNotIn("RUNNER_ALLOW_RUNASROOT", env, "jobs never run as root")
                    self.assertIs(c["readonlyRootFilesystem"], False)
                    # The image's entrypoint (tini -- hangar agent) is not overridden.
                    for overriding in ("entryPoint", "command"):
                        self.assertNotIn(overriding, c)
                    self.assertEqual(c["logConfiguration"]["logDriver"], "awslogs")
                    self.assertEqual(c["logConfiguration"]["options"]["awslogs-region"], "us-east-1")

    def test_runner_user_agrees_with_the_image(self):
        # The image sets ENV RUNNER_USER too; the task definition repeats it so that module and
        # image say the same, and an older image without it still switches users.
        env = {e["name"]: e["value"] for e in container(plan(ORG), "org")["environment"]}
        dockerfile = (MODULE_DIR.parent / "docker" / "Dockerfile").read_text()
        # The user the image creates with uid 1001 is the module's RUNNER_USER ...
        self.assertEqual(re.findall(r"useradd --uid 1001 .*?(\S+)\s*$", dockerfile, re.MULTILINE), [env["RUNNER_USER"]])
        # ... and the image's own RUNNER_USER, where it sets one, is the same.
        for value in re.findall(r"^ENV RUNNER_USER=(\S+)\s*$", dockerfile, re.MULTILINE):
            self.assertEqual(value, env["RUNNER_USER"], "the image's RUNNER_USER")

    def test_environment_and_secrets(self):
        expected_scope = {
            "standalone (default repository)": {
                "your-repository-name": {"RUNNER_SCOPE": "repo", "GITHUB_REPOSITORY": "your-organization/your-repository-name"}
            },
            "standalone (two repositories)": {
                "your-repository-name": {"RUNNER_SCOPE": "repo", "GITHUB_REPOSITORY": "your-organization/your-repository-name"},
                "another-repo": {"RUNNER_SCOPE": "repo", "GITHUB_REPOSITORY": "your-organization/another-repo"},
            },
            "org": {"org": {"RUNNER_SCOPE": "org", "GITHUB_ORG": "your-organization"}},
        }
        for label, variables in MODES.items():
            p = plan(variables)
            for key, scope in expected_scope[label].items():
                with self.subTest(f"{label}: {key}"):
                    c = container(p, key)
                    env = {e["name"]: e["value"] for e in c["environment"]}
                    self.assertEqual(len(env), len(c["environment"]), "no duplicate variables")
                    self.assertEqual(
                        env,
                        {
                            **scope,
                            "RUNNER_LABELS": "your-runner-label",
                            "RUNNER_NAME_PREFIX": "aws-github-runner",
                            "HANGAR_LOG_FORMAT": "json",
                            "HANGAR_DRAIN_TIMEOUT": "80s",
                            "AWS_REGION": "us-east-1",
                            "RUNNER_USER": "runner",
                        },
                    )
                    for value in env.values():
                        self.assertIsInstance(value, str, "ECS environment values are strings")
                    secrets = {s["name"]: s["valueFrom"] for s in c["secrets"]}
                    self.assertEqual(secrets, CREDENTIAL_SECRETS[variables["runner_type"]])
                    # Credentials only as secrets, never as plain environment.
                    self.assertFalse(CREDENTIAL_NAMES & set(env))
                    self.assertFalse(any(PREFIX in v for v in env.values()))

    def test_environment_follows_variables(self):
        p = plan(
            {
                "runner_type": "org",
                "github_organization": "acme",
                "runner_labels": ["linux", "big"],
                "drain_timeout_seconds": 60,
                "runner_group": "ci",
                "ssm_parameter_prefix": "/acme/gh",
                "aws_region": "eu-west-1",
            }
        )
        c = container(p, "org")
        env = {e["name"]: e["value"] for e in c["environment"]}
        self.assertEqual(env["GITHUB_ORG"], "acme")
        self.assertEqual(env["RUNNER_LABELS"], "linux,big")
        self.assertEqual(env["HANGAR_DRAIN_TIMEOUT"], "60s")
        self.assertEqual(env["RUNNER_GROUP"], "ci")
        self.assertEqual(c["secrets"][0]["valueFrom"], f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/acme/gh/client-id")
        standalone = plan({"runner_type": "standalone", "runner_group": "ci"})
        env = {e["name"] for e in container(standalone, "your-repository-name")["environment"]}
        self.assertNotIn("RUNNER_GROUP", env, "runner groups are for organization runners")

    def test_fargate_task(self):
        for label, variables in MODES.items():
            p = plan(variables)
            for key in expected_keys(variables):
                with self.subTest(f"{label}: {key}"):
                    td = instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate()
                    self.assertEqual(td["requires_compatibilities"], ["FARGATE"])
                    self.assertEqual(td["network_mode"], "awsvpc")
                    self.assertEqual((td["cpu"], td["memory"]), (1024, 2048))
                    self.assertEqual(td["execution_role_arn"], Unknown("aws_iam_role.execution.arn"))
                    # Each key's own task role.
                    self.assertEqual(td["task_role_arn"], Unknown(f'aws_iam_role.task["{key}"].arn'))
                    self.assertEqual(td["family"], json.loads(td["container_definitions"])[0]["name"])

    def test_names_are_valid_ecs_names(self):
        p = plan({"runner_type": "standalone", "github_repository_name": ["my.repo"]})
        td = instance(p, 'aws_ecs_task_definition.github_runner["my.repo"]').evaluate()
        self.assertEqual(td["family"], "github-runner-standalone-my-repo")
        group = instance(p, 'aws_cloudwatch_log_group.github_runner["my.repo"]').evaluate()
        self.assertEqual(group["name"], "awslogs-github-runner-standalone-my.repo")


class Services(unittest.TestCase):
    def test_service_per_key(self):
        for label, variables in MODES.items():
            p = plan(variables)
            for key in expected_keys(variables):
                with self.subTest(f"{label}: {key}"):
                    s = instance(p, f'aws_ecs_service.github_runner["{key}"]').evaluate()
                    name = "github-runner-org-org" if key == "org" else f"github-runner-standalone-{key}"
                    self.assertEqual(s["name"], name)
                    self.assertEqual(s["task_definition"], Unknown(f'aws_ecs_task_definition.github_runner["{key}"].arn'))
                    self.assertEqual(s["cluster"], Unknown("data.aws_ecs_cluster.this.arn"))
                    self.assertEqual(s["launch_type"], "FARGATE")
                    self.assertEqual(s["desired_count"], 1)
                    self.assertIs(s["enable_execute_command"], False)
                    self.assertEqual(s["propagate_tags"], "SERVICE")
                    (network,) = s["network_configuration"]
                    self.assertIs(network["assign_public_ip"], False)
                    self.assertEqual(network["subnets"], p.var_values["private_subnet_ids"])
                    self.assertEqual(network["security_groups"], p.var_values["security_group_ids"])

    def test_scaling_and_exec_follow_variables(self):
        p = plan({**ORG, "desired_count": 3, "enable_execute_command": True})
        s = instance(p, 'aws_ecs_service.github_runner["org"]').evaluate()
        self.assertEqual((s["desired_count"], s["enable_execute_command"]), (3, True))


################################################################################
# IAM
################################################################################


class Iam(unittest.TestCase):
    def test_execution_role_reads_exactly_the_modes_parameters(self):
        for label, variables in MODES.items():
            with self.subTest(label):
                p = plan(variables)
                self.assertEqual(set(statements(p, "execution")), {"WriteRunnerLogs"})
                st = {**statements(p, "execution"), **statements(p, "execution_credentials[0]")}
                arns = list(CREDENTIAL_SECRETS[variables["runner_type"]].values())
                read = st["ReadRunnerCredentials"]
                self.assertEqual(read["actions"], ["ssm:GetParameters"])
                self.assertEqual(read["resources"], arns)
                for arn in read["resources"]:
                    self.assertTrue(arn.startswith(f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter{PREFIX}/"), arn)
                # The ECS secrets are exactly what the role may read.
                for key in expected_keys(variables):
                    self.assertEqual(sorted(s["valueFrom"] for s in container(p, key)["secrets"]), sorted(arns))
                decrypt = st["DecryptRunnerCredentials"]
                self.assertEqual(decrypt["actions"], ["kms:Decrypt"])
                self.assertEqual(decrypt["resources"], [SSM_MANAGED_KEY])
                conditions = {c["variable"]: (c["test"], c["values"]) for c in decrypt["condition"]}
                self.assertEqual(conditions["kms:ViaService"], ("StringEquals", ["ssm.us-east-1.amazonaws.com"]))
                self.assertEqual(conditions["kms:EncryptionContext:PARAMETER_ARN"], ("StringEquals", arns))
                logs = st["WriteRunnerLogs"]
                self.assertEqual(logs["actions"], ["logs:CreateLogStream", "logs:PutLogEvents"])
                self.assertEqual(
                    logs["resources"],
                    [f'${{aws_cloudwatch_log_group.github_runner["{k}"].arn}}:*' for k in sorted(expected_keys(variables))],
                )

    def test_task_role_only_protects_tasks_of_its_cluster(self):
        for label, variables in MODES.items():
            with self.subTest(label):
                st = statements(plan(variables), "task")
                self.assertEqual(set(st), {"ProtectRunningJobs"})
                self.assertEqual(st["ProtectRunningJobs"]["actions"], ["ecs:GetTaskProtection", "ecs:UpdateTaskProtection"])
                self.assertEqual(
                    st["ProtectRunningJobs"]["resources"],
                    [f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/your-ecs-cluster-name/*"],
                )

    def test_jit_parameters_are_under_the_prefix(self):
        p = plan({**STANDALONE, "enable_jit_config_parameters": True})
        st = statements(p, 'task_jit["your-repository-name"]')
        self.assertEqual(st["TakeOneShotJitConfig"]["actions"], ["ssm:DeleteParameter", "ssm:GetParameter"])
        self.assertEqual(st["TakeOneShotJitConfig"]["resources"], [f"{PARAM_ARN}/jit/your-repository-name/*"])
        conditions = {c["variable"]: c["values"] for c in st["DecryptOneShotJitConfig"]["condition"]}
        self.assertEqual(conditions["kms:EncryptionContext:PARAMETER_ARN"], [f"{PARAM_ARN}/jit/your-repository-name/*"])
        self.assertEqual(conditions["kms:ViaService"], ["ssm.us-east-1.amazonaws.com"])

    def test_no_wildcard_actions_and_star_resources_only_for_ecs_exec(self):
        everything = {**ORG, "enable_execute_command": True, "enable_jit_config_parameters": True, "enable_controller": True}
        # The only actions granted on "*": those AWS authorizes on no resource type (ECS Exec's
        # channels, DescribeTaskDefinition, DescribeParameters), and ListTasks, narrowed by its
        # cluster condition instead.
        star = {
            ("data.aws_iam_policy_document.task_exec[0]", "EcsExecChannels"),
            ("data.aws_iam_policy_document.ecr_pull[0]", "GetEcrAuthorizationToken"),
            ("data.aws_iam_policy_document.controller_task[0]", "CheckTaskDefinitions"),
            ("data.aws_iam_policy_document.controller_task[0]", "FindLeftoverJitConfig"),
            ("data.aws_iam_policy_document.controller_task[0]", "ListClusterTasks"),
        }
        for label, variables in {**MODES, **CONTROLLER_MODES, "org with every option": everything}.items():
            with self.subTest(label):
                for address, doc in all_policy_documents(plan(variables)).items():
                    for statement in doc.get("statement", []):
                        self.assertEqual(statement["effect"], "Allow")
                        for action in statement["actions"]:
                            self.assertRegex(action, r"^[a-z0-9-]+:[A-Za-z]+$", f"{address}: no wildcard action")
                        if "*" in statement.get("resources", []):
                            self.assertIn((address, statement["sid"]), star)
                            self.assertEqual(statement["resources"], ["*"])
                        for key in ("not_actions", "not_resources"):
                            self.assertNotIn(key, statement)

    def test_roles_trust_ecs_tasks(self):
        p = plan(TWO_REPOS)
        for role, document in (
            ("execution", "execution_assume"),
            ('task["your-repository-name"]', "task_assume"),
            ('task["another-repo"]', "task_assume"),
        ):
            r = instance(p, f"aws_iam_role.{role}").evaluate()
            self.assertEqual(r["assume_role_policy"], Unknown(f"data.aws_iam_policy_document.{document}.json"))
            (statement,) = statements(p, document).values()
            self.assertEqual(statement["actions"], ["sts:AssumeRole"])
            self.assertEqual(statement["principals"], [{"type": "Service", "identifiers": ["ecs-tasks.amazonaws.com"]}])
        (task_trust,) = statements(p, "task_assume").values()
        conditions = {c["variable"]: c["values"] for c in task_trust["condition"]}
        self.assertEqual(conditions["aws:SourceAccount"], [ACCOUNT])
        self.assertEqual(conditions["aws:SourceArn"], [f"arn:aws:ecs:us-east-1:{ACCOUNT}:*"])

    def test_policies_are_attached_to_the_right_roles(self):
        p = plan({**TWO_REPOS, "enable_execute_command": True, "enable_jit_config_parameters": True})
        attached = {
            "aws_iam_role_policy.execution": ("aws_iam_role.execution.id", "data.aws_iam_policy_document.execution.json"),
            "aws_iam_role_policy.execution_credentials[0]": (
                "aws_iam_role.execution.id",
                "data.aws_iam_policy_document.execution_credentials[0].json",
            ),
        }
        for key in ("your-repository-name", "another-repo"):
            role = f'aws_iam_role.task["{key}"].id'
            attached |= {
                f'aws_iam_role_policy.task["{key}"]': (role, "data.aws_iam_policy_document.task.json"),
                f'aws_iam_role_policy.task_jit["{key}"]': (role, f'data.aws_iam_policy_document.task_jit["{key}"].json'),
                f'aws_iam_role_policy.task_exec["{key}"]': (role, "data.aws_iam_policy_document.task_exec[0].json"),
            }
        for address, (role, policy) in attached.items():
            with self.subTest(address):
                r = instance(p, address).evaluate()
                self.assertEqual((r["role"], r["policy"]), (Unknown(role), Unknown(policy)))


################################################################################
# Pulling the image: ECR, or a private registry's credentials
################################################################################

PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
# The execution roles: the runners' always, the controller's with the controller.
EXECUTION_ROLES = {"runners": "aws_iam_role.execution", "controller": "aws_iam_role.controller_execution[0]"}


class ImagePull(unittest.TestCase):
    def execution_roles(self, p: Plan) -> dict:
        return {label: role_documents(p, role) for label, role in EXECUTION_ROLES.items() if role in resource_addresses(p)}

    def test_ecr_repository_from_the_image(self):
        cases = {
            DEFAULT_IMAGE: DEFAULT_REPOSITORY,
            f"210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/hangar-runner:v1.2_3@sha256:{'0' * 64}": "arn:aws:ecr:eu-west-1:210987654321:repository/team/hangar-runner",
            f"{ACCOUNT}.dkr.ecr.eu-central-1.amazonaws.com/a.b_c-d/e@sha256:{'f' * 64}": f"arn:aws:ecr:eu-central-1:{ACCOUNT}:repository/a.b_c-d/e",
            f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/hangar-runner": f"arn:aws-cn:ecr:cn-north-1:{ACCOUNT}:repository/hangar-runner",
            f"{ACCOUNT}.dkr.ecr-fips.us-gov-west-1.amazonaws.com/hangar-runner:latest": f"arn:aws-us-gov:ecr:us-gov-west-1:{ACCOUNT}:repository/hangar-runner",
            "ghcr.io/your-organization/hangar-runner:1.2.3": None,
            "public.ecr.aws/your-alias/hangar-runner:latest": None,
            "registry.example.com:5000/team/hangar-runner": None,
            "hangar-runner:latest": None,
        }
        for image, arn in cases.items():
            with self.subTest(image):
                p = plan({**STANDALONE, "runner_image": image})
                self.assertEqual(p.local("image_ecr_repository_arn"), arn)
                self.assertEqual(container(p, "your-repository-name")["image"], image)

    def test_both_execution_roles_pull_exactly_the_ecr_repository(self):
        other_account = "arn:aws:ecr:eu-west-1:210987654321:repository/team/hangar-runner"
        images = {
            "default": (DEFAULT_IMAGE, DEFAULT_REPOSITORY),
            "another account and region": (f"210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/hangar-runner@sha256:{'0' * 64}", other_account),
        }
        for image_label, (image, repository) in images.items():
            for label, variables in {**MODES, **CONTROLLER_MODES}.items():
                with self.subTest(f"{label}, {image_label}"):
                    p = plan({**variables, "runner_image": image})
                    roles = self.execution_roles(p)
                    self.assertEqual(set(roles), {"runners", "controller"} if variables.get("enable_controller") else {"runners"})
                    for role, documents in roles.items():
                        self.assertTrue(allows(documents, "ecr:GetAuthorizationToken", "*"), role)
                        for action in PULL_ACTIONS:
                            self.assertTrue(allows(documents, action, repository), f"{role}: {action}")
                            for elsewhere in (f"{repository}-other", f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/other", f"{repository}/nested"):
                                self.assertFalse(allows(documents, action, elsewhere), f"{role}: {action} on {elsewhere}")
                        self.assertFalse(any(a.startswith("secretsmanager:") for d in documents.values() for st in d["statement"] for a in st["actions"]))
                    for c in [container(p, key) for key in expected_keys(variables)] + ([controller_container(p)] if "controller" in roles else []):
                        self.assertNotIn("repositoryCredentials", c)

    def test_no_ecr_statements_for_another_registry(self):
        for image in ("ghcr.io/your-organization/hangar-runner:1.2.3", "public.ecr.aws/your-alias/hangar-runner:latest"):
            for label, variables in {**MODES, **CONTROLLER_MODES}.items():
                with self.subTest(f"{label}, {image}"):
                    p = plan({**variables, "runner_image": image})
                    self.assertNotIn("data.aws_iam_policy_document.ecr_pull[0]", p.all_instances("data"))
                    for documents in self.execution_roles(p).values():
                        for document in documents.values():
                            for statement in document["statement"]:
                                self.assertFalse([a for a in statement["actions"] if a.startswith(("ecr:", "secretsmanager:"))])
                    for key in expected_keys(variables):
                        self.assertNotIn("repositoryCredentials", container(p, key))

    def test_registry_credentials_for_a_private_registry(self):
        image = "ghcr.io/your-organization/hangar-runner:1.2.3"
        for label, variables in {**MODES, **CONTROLLER_MODES}.items():
            with self.subTest(label):
                p = plan({**variables, "runner_image": image, "repository_credentials_secret_arn": REGISTRY_SECRET})
                containers = [container(p, key) for key in expected_keys(variables)]
                roles = self.execution_roles(p)
                if variables.get("enable_controller"):
                    containers.append(controller_container(p))
                self.assertEqual(len(roles), 2 if variables.get("enable_controller") else 1)
                for c in containers:
                    self.assertEqual(c["repositoryCredentials"], {"credentialsParameter": REGISTRY_SECRET})
                for role, documents in roles.items():
                    self.assertTrue(allows(documents, "secretsmanager:GetSecretValue", REGISTRY_SECRET), role)
                    self.assertFalse(allows(documents, "secretsmanager:GetSecretValue", REGISTRY_SECRET[:-6] + "XyZ789"), role)
                    granted = [(a, st["resources"]) for d in documents.values() for st in d["statement"] for a in st["actions"] if a.startswith(("secretsmanager:", "ecr:"))]
                    self.assertEqual(granted, [("secretsmanager:GetSecretValue", [REGISTRY_SECRET])], role)
                self.assertEqual(preconditions_of(p, "aws_iam_role_policy", "execution_registry_credentials"), [])

    def test_registry_credentials_are_refused_for_an_ecr_image(self):
        p = plan({**STANDALONE, "repository_credentials_secret_arn": REGISTRY_SECRET})
        (message,) = preconditions_of(p, "aws_iam_role_policy", "execution_registry_credentials")
        self.assertIn("runner_image is an ECR image", message)

    def test_validation_uses_the_same_ecr_pattern(self):
        local = re.search(r'^  ecr_image_pattern = ("[^\n]+")$', (MODULE_DIR / "locals.tf").read_text(), re.MULTILINE).group(1)
        self.assertIn(f"can(regex({local}, var.runner_image))", (MODULE_DIR / "variables.tf").read_text())


################################################################################
# One task role per runner key, each with its own one-shot JIT folder
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


def jit_preconditions_failing(p: Plan) -> list:
    """The error messages of the failing preconditions of every aws_iam_role_policy.task_jit instance."""
    return preconditions_of(p, "aws_iam_role_policy", "task_jit")


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


# Two repositories (standalone) and the organization, with and without the controller.
JIT_MODES = {
    "standalone (two repositories), enable_jit_config_parameters": {**TWO_REPOS, "enable_jit_config_parameters": True},
    "standalone (two repositories) + controller": {**TWO_REPOS, "enable_controller": True},
    "org, enable_jit_config_parameters": {**ORG, "enable_jit_config_parameters": True},
    "org + controller": {**ORG, "enable_controller": True},
}
# Pools of this deployment or of another one under the same prefix (a standalone and an org
# deployment in separate states share <prefix>/jit/).
SOME_POOLS = ["your-repository-name", "another-repo", "org", "another-repo-2", "org-2", "your"]


class JitIsolation(unittest.TestCase):
    def test_each_role_takes_only_its_own_pools_parameters(self):
        for label, variables in JIT_MODES.items():
            p = plan(variables)
            pools = {key: runner["pool_name"] for key, runner in p.local("runners").items()}
            self.assertEqual(sorted(pools), sorted(expected_keys(variables)))
            for key, pool in pools.items():
                with self.subTest(f"{label}: {key}"):
                    documents = role_documents(p, f'aws_iam_role.task["{key}"]')
                    own = f"{PARAM_ARN}/jit/{pool}/aws-github-runner-{pool}-1"
                    for action in ("ssm:GetParameter", "ssm:DeleteParameter"):
                        self.assertTrue(allows(documents, action, own), f"{action} on its own {own}")
                    self.assertTrue(allows(documents, "kms:Decrypt", SSM_MANAGED_KEY, ssm_decrypt_context(own)))
                    # Another pool's pending runners: neither read, delete nor decrypt.
                    for other in sorted(set(SOME_POOLS) - {pool}):
                        theirs = f"{PARAM_ARN}/jit/{other}/aws-github-runner-{other}-1"
                        for action in ("ssm:GetParameter", "ssm:DeleteParameter"):
                            self.assertFalse(allows(documents, action, theirs), f"{action} on {theirs}")
                        self.assertFalse(allows(documents, "kms:Decrypt", SSM_MANAGED_KEY, ssm_decrypt_context(theirs)))
                    # Nor anything else under the prefix: the credentials, the pool file, a folder
                    # whose name only starts like its own.
                    for arn in (
                        f"{PARAM_ARN}/jit/{pool}",
                        f"{PARAM_ARN}/jit/{pool}-b/r",
                        f"{PARAM_ARN}/pat",
                        f"{PARAM_ARN}/private-key",
                        f"{PARAM_ARN}/controller/config",
                    ):
                        for action in ("ssm:GetParameter", "ssm:GetParameters", "ssm:DeleteParameter"):
                            self.assertFalse(allows(documents, action, arn), f"{action} on {arn}")
                        self.assertFalse(allows(documents, "kms:Decrypt", SSM_MANAGED_KEY, ssm_decrypt_context(arn)))
                    # Decrypting its own parameter directly, not through SSM: no.
                    self.assertFalse(allows(documents, "kms:Decrypt", SSM_MANAGED_KEY, {"kms:EncryptionContext:PARAMETER_ARN": own}))

    def test_the_role_of_a_pools_task_definition_takes_that_pools_handoffs(self):
        # End to end: the controller writes <parameter_prefix>/<pool>/<runner> for a pool and runs
        # the pool's task definition; that task definition's role can take it, no other role can.
        for label, variables in {k: v for k, v in JIT_MODES.items() if "controller" in k}.items():
            with self.subTest(label):
                p = plan(variables)
                controller = role_documents(p, "aws_iam_role.controller_task[0]")
                roles = {key: role_documents(p, f'aws_iam_role.task["{key}"]') for key in expected_keys(variables)}
                for pool in pool_file(p)["pool"]:
                    handoff = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter{pool['ecs']['parameter_prefix']}/{pool['name']}/runner-7"
                    self.assertTrue(allows(controller, "ssm:PutParameter", handoff))
                    self.assertTrue(allows(controller, "kms:GenerateDataKey", SSM_MANAGED_KEY, ssm_decrypt_context(handoff)))
                    (key,) = [
                        k for k in expected_keys(variables)
                        if instance(p, f'aws_ecs_task_definition.github_runner["{k}"]').evaluate()["family"] == pool["ecs"]["task_definition"]
                    ]
                    task_role = instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate()["task_role_arn"]
                    self.assertEqual(task_role, Unknown(f'aws_iam_role.task["{key}"].arn'))
                    for other, documents in roles.items():
                        self.assertEqual(allows(documents, "ssm:GetParameter", handoff), other == key, f"{other} on {handoff}")
                # The controller writes nowhere else under the prefix.
                for arn in (f"{PARAM_ARN}/pat", f"{PARAM_ARN}/private-key", f"{PARAM_ARN}/controller/config", f"{PARAM_ARN}/jitter/r"):
                    self.assertFalse(allows(controller, "ssm:PutParameter", arn), arn)
                    self.assertFalse(allows(controller, "kms:Encrypt", SSM_MANAGED_KEY, ssm_decrypt_context(arn)), arn)

    def test_no_jit_permission_unless_asked(self):
        for label, variables in MODES.items():
            with self.subTest(label):
                p = plan(variables)
                for key in expected_keys(variables):
                    documents = role_documents(p, f'aws_iam_role.task["{key}"]')
                    self.assertEqual(set(documents), {"data.aws_iam_policy_document.task"})

    def test_pass_role_covers_exactly_the_runner_roles(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                passed = statements(p, "controller_task[0]")["PassRunnerRoles"]["resources"]
                roles = {instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate()["task_role_arn"] for key in expected_keys(variables)}
                roles.add(Unknown("aws_iam_role.execution.arn"))
                self.assertEqual(sorted(passed), sorted(str(r) for r in roles))
                self.assertEqual(len(passed), len(expected_keys(variables)) + 1)

    def test_role_names_fit_and_org_keeps_its_role(self):
        long_names = {"runner_type": "standalone", "github_repository_name": ["x" * 100, "A.b_c", "a"]}
        for variables in (STANDALONE, TWO_REPOS, ORG, long_names):
            p = plan(variables)
            for key in expected_keys(variables):
                role = instance(p, f'aws_iam_role.task["{key}"]').evaluate()
                self.assertLessEqual(len(role["name_prefix"]), 38, role["name_prefix"])
                self.assertRegex(role["name_prefix"], r"^[\w+=,.@-]+$")
                self.assertLessEqual(len(role["description"]), 1000)
        self.assertEqual(instance(plan(ORG), 'aws_iam_role.task["org"]').evaluate()["name_prefix"], "github-runner-org-task-")
        self.assertEqual(
            instance(plan(TWO_REPOS), 'aws_iam_role.task["another-repo"]').evaluate()["name_prefix"],
            "github-runner-another-repo-task-",
        )

    def test_moved_blocks_keep_the_org_role(self):
        # The single task role (and its policies) of earlier versions become the "org" key's.
        moved = {}
        for file in sorted({block.file for block in MODULE.of_type("moved")}):
            moved.update(re.findall(r"moved \{\s*from = (\S+)\s*to\s*= (\S+)\s*\}", (MODULE_DIR / file).read_text()))
        self.assertEqual(len(moved), len(MODULE.of_type("moved")))
        self.assertEqual(
            moved,
            {
                "aws_iam_role.task": 'aws_iam_role.task["org"]',
                "aws_iam_role_policy.task": 'aws_iam_role_policy.task["org"]',
                "aws_iam_role_policy.task_jit[0]": 'aws_iam_role_policy.task_jit["org"]',
                "aws_iam_role_policy.task_exec[0]": 'aws_iam_role_policy.task_exec["org"]',
            },
        )
        addresses = resource_addresses(plan({**ORG, "enable_execute_command": True, "enable_jit_config_parameters": True}))
        self.assertLessEqual(set(moved.values()), addresses)

    def test_jit_folders_without_the_controller_must_be_distinct(self):
        bad = {
            "a name with no letter or digit": (["_.", "ok"], "gives no one-shot JIT folder name"),
            "two repositories, one folder": (["a_b", "a-b"], "give the same one-shot JIT folder"),
        }
        for label, (repositories, message) in bad.items():
            with self.subTest(label):
                variables = {"runner_type": "standalone", "github_repository_name": repositories, "enable_jit_config_parameters": True}
                failing = jit_preconditions_failing(plan(variables))
                self.assertTrue(failing)
                self.assertTrue(all(message in m for m in failing), failing)
                # The controller's pool file refuses the same with its own message, once.
                with_controller = plan({**variables, "enable_controller": True})
                self.assertEqual(jit_preconditions_failing(with_controller), [])
                self.assertEqual(len(preconditions_failing(with_controller)), 1)
        self.assertIn("a-b, a_b", " ".join(jit_preconditions_failing(plan(
            {"runner_type": "standalone", "github_repository_name": ["a_b", "a-b"], "enable_jit_config_parameters": True}
        ))))
        for label, variables in JIT_MODES.items():
            with self.subTest(label):
                self.assertEqual(jit_preconditions_failing(plan(variables)), [])


################################################################################
# hangar controller (enable_controller)
################################################################################

# The fields the controller's pool file accepts (config.rs: RawController, RawPool with its flattened
# RawLimits, EcsLaunch; all deny_unknown_fields).
CONTROLLER_FIELDS = {
    "resync_interval", "listen", "github_api_url", "github_web_url", "credentials_ssm_prefix",
    "github_budget_share", "owner_name", "webhook_secret_env", "reload_interval",
}
LIMIT_FIELDS = {"min_idle", "max", "max_runtime", "pending_timeout", "registration_timeout", "offline_grace", "handoff_max_age"}
POOL_FIELDS = {"name", "repository", "organization", "scale_set", "labels", "runner_group", "ecs", "local"} | LIMIT_FIELDS
ECS_FIELDS = {
    "cluster", "task_definition", "container_name", "subnets", "security_groups", "assign_public_ip",
    "launch_type", "capacity_provider", "parameter_prefix", "kms_key_id",
}
CONTROLLER_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


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


class ControllerPoolFile(unittest.TestCase):
    def assert_controller_accepts(self, config: dict):
        """The checks of config.rs that need no network, applied to the parsed file."""
        self.assertLessEqual(set(config), {"controller", "defaults", "pool"})
        self.assertLessEqual(set(config["controller"]), CONTROLLER_FIELDS)
        self.assertTrue(config["pool"], "at least one pool")
        names = [pool["name"] for pool in config["pool"]]
        self.assertEqual(len(names), len(set(names)), "pool names are unique")
        for pool in config["pool"]:
            with self.subTest(pool=pool["name"]):
                self.assertLessEqual(set(pool), POOL_FIELDS)
                self.assertRegex(pool["name"], r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
                self.assertEqual(("repository" in pool) + ("organization" in pool), 1, "exactly one scope")
                if "repository" in pool:
                    self.assertRegex(pool["repository"], r"^[A-Za-z0-9-]+/[A-Za-z0-9_.-]+$")
                    self.assertNotIn("runner_group", pool, "runner groups are for organizations")
                for label in pool["labels"]:
                    self.assertTrue(label.strip() and "," not in label)
                self.assertLessEqual(pool["min_idle"], pool["max"])
                self.assertLessEqual(set(pool["ecs"]), ECS_FIELDS)
                ecs = pool["ecs"]
                for field in ("cluster", "task_definition", "container_name"):
                    self.assertTrue(ecs[field].strip())
                self.assertTrue(ecs["subnets"] and all(s.strip() for s in ecs["subnets"]))
                self.assertNotIn("capacity_provider", ecs)
                self.assertIn(ecs["launch_type"], ("FARGATE", "EC2", "EXTERNAL"))
                self.assertTrue(ecs["parameter_prefix"].startswith("/") and not ecs["parameter_prefix"].endswith("/"))

    def test_pools_per_mode(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                config = pool_file(p)
                self.assert_controller_accepts(config)
                self.assertEqual(config["controller"], {"listen": "0.0.0.0:9464"}, "credentials come as ECS secrets")
                keys = expected_keys(variables)
                self.assertEqual([pool["name"] for pool in config["pool"]], sorted(keys))
                for pool in config["pool"]:
                    key = pool["name"]
                    family = instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate()["family"]
                    if variables["runner_type"] == "org":
                        self.assertEqual(pool["organization"], "your-organization")
                        self.assertNotIn("repository", pool)
                    else:
                        self.assertEqual(pool["repository"], f"your-organization/{key}")
                        self.assertNotIn("organization", pool)
                    self.assertNotIn("runner_group", pool)
                    self.assertEqual(pool["labels"], ["your-runner-label"])
                    self.assertEqual((pool["min_idle"], pool["max"]), (0, 10))
                    self.assertEqual(
                        pool["ecs"],
                        {
                            "cluster": "your-ecs-cluster-name",
                            "task_definition": family,
                            "container_name": container(p, key)["name"],
                            "subnets": p.var_values["private_subnet_ids"],
                            "security_groups": p.var_values["security_group_ids"],
                            "assign_public_ip": False,
                            "launch_type": "FARGATE",
                            "parameter_prefix": f"{PREFIX}/jit",
                        },
                    )
                self.assertEqual(preconditions_failing(p), [])

    def test_parameter_is_a_plain_string_without_secrets(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                parameter = instance(plan(variables), "aws_ssm_parameter.controller_config[0]").evaluate()
                self.assertEqual(parameter["name"], f"{PREFIX}/controller/config")
                self.assertEqual((parameter["type"], parameter["tier"]), ("String", "Standard"))
                for name in CREDENTIAL_NAMES | {"pat", "private-key", "credentials_ssm_prefix"}:
                    self.assertNotIn(name, parameter["value"])
                self.assertTrue(parameter["value"].endswith("\n"))

    def test_pools_follow_variables(self):
        p = plan(
            {
                **ORG,
                "enable_controller": True,
                "github_organization": "acme",
                "runner_group": 'ci "blue"',
                "runner_labels": ["gpu", 'a\\b"c'],
                "controller_min_idle": 2,
                "controller_max": 5,
                "ecs_cluster_name": "ci",
                "private_subnet_ids": ["subnet-aaa"],
                "security_group_ids": ["sg-1", "sg-2"],
                "ssm_parameter_prefix": "/acme/gh",
            }
        )
        config = pool_file(p)
        self.assert_controller_accepts(config)
        (pool,) = config["pool"]
        self.assertEqual(pool["organization"], "acme")
        self.assertEqual(pool["runner_group"], 'ci "blue"')
        self.assertEqual(pool["labels"], ["gpu", 'a\\b"c'])
        self.assertEqual((pool["min_idle"], pool["max"]), (2, 5))
        self.assertEqual(pool["ecs"]["cluster"], "ci")
        self.assertEqual(pool["ecs"]["subnets"], ["subnet-aaa"])
        self.assertEqual(pool["ecs"]["security_groups"], ["sg-1", "sg-2"])
        self.assertEqual(pool["ecs"]["parameter_prefix"], "/acme/gh/jit")

    def test_pool_names_are_valid_for_any_repository_name(self):
        cases = {
            "My.Repo_Name": "my-repo-name",
            "_leading.and.trailing_": "leading-and-trailing",
            "x" * 40: "x" * 32,
            "x" * 31 + "-tail": "x" * 31,
            "a--b": "a--b",
        }
        p = plan({"runner_type": "standalone", "enable_controller": True, "github_repository_name": list(cases)})
        self.assertEqual({key: pool["name"] for key, pool in p.local("controller_pools").items()}, cases)
        self.assert_controller_accepts(pool_file(p))
        self.assertEqual(preconditions_failing(p), [])

    def test_preconditions_refuse_what_the_controller_would(self):
        bad = {
            "a name with no letter or digit": ({"github_repository_name": ["_.-"]}, "gives none"),
            "two repositories, one pool name": ({"github_repository_name": ["a_b", "a-b"]}, "same pool name"),
            "cut to the same 32": ({"github_repository_name": ["x" * 33, "x" * 34]}, "same pool name"),
            "min_idle above max": ({"controller_min_idle": 5, "controller_max": 4}, "must not be above controller_max"),
        }
        for label, (variables, message) in bad.items():
            with self.subTest(label):
                p = plan({"runner_type": "standalone", "enable_controller": True, **variables})
                failing = preconditions_failing(p)
                self.assertEqual(len(failing), 1, failing)
                self.assertIn(message, failing[0])

    def test_large_pool_files_use_the_advanced_tier(self):
        repos = [f"repository-number-{i:02d}-with-a-long-name" for i in range(12)]
        p = plan({"runner_type": "standalone", "enable_controller": True, "github_repository_name": repos})
        parameter = instance(p, "aws_ssm_parameter.controller_config[0]").evaluate()
        self.assertGreater(len(parameter["value"]), 4096)
        self.assertEqual(parameter["tier"], "Advanced")
        self.assertEqual(preconditions_failing(p), [])
        self.assertEqual(len(pool_file(p)["pool"]), 12)
        many = plan({"runner_type": "standalone", "enable_controller": True, "github_repository_name": repos * 1 + [r + "-b" for r in repos]})
        self.assertTrue(any("8 KB" in m for m in preconditions_failing(many)))

    def test_bad_controller_values_are_rejected(self):
        bad = {"controller_min_idle": [-1, 1.5, 1001], "controller_max": [0, 2.5, 1001], "enable_controller": [None]}
        for name, values in bad.items():
            for value in values:
                with self.subTest(f"{name}={value!r}"):
                    errors = Plan(MODULE, {"runner_type": "standalone", name: value}, STUBS).validation_errors()
                    self.assertTrue(any(e.startswith(f"{name}:") for e in errors), errors)


def controller_container(p: Plan) -> dict:
    definition = instance(p, "aws_ecs_task_definition.controller[0]").evaluate()
    (c,) = json.loads(definition["container_definitions"])
    return c


class ControllerService(unittest.TestCase):
    def test_no_runner_services_but_the_task_definitions_stay(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                self.assertFalse([a for a in resource_addresses(p) if a.startswith("aws_ecs_service.github_runner")])
                self.assertEqual(p.output("service_names"), {})
                self.assertEqual(p.output("service_replace_arguments"), "-replace='aws_ecs_service.controller[0]'")
                for key in expected_keys(variables):
                    # The runners' template is the fixed services' one (its entrypoint is still
                    # hangar agent) without the credentials.
                    off = {k: v for k, v in variables.items() if k != "enable_controller"}
                    fixed = container(plan(off), key)
                    self.assertIn("secrets", fixed)
                    self.assertEqual(container(p, key), {k: v for k, v in fixed.items() if k != "secrets"})

    def test_runner_tasks_get_no_credential(self):
        # The controller owns the registration: its runners take a one-shot JIT configuration and
        # need no GitHub credential, so neither their container nor their execution role has one.
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                for key in expected_keys(variables):
                    c = container(p, key)
                    self.assertNotIn("secrets", c, "no `secrets` at all in a controller's runner task")
                    env = {e["name"]: e["value"] for e in c["environment"]}
                    self.assertFalse(CREDENTIAL_NAMES & set(env))
                    self.assertFalse(any(PREFIX in v for v in env.values()))
                # The runners' execution role reads no parameter and decrypts nothing.
                self.assertNotIn("aws_iam_role_policy.execution_credentials[0]", resource_addresses(p))
                documents = role_documents(p, "aws_iam_role.execution")
                self.assertIn("data.aws_iam_policy_document.execution", documents)
                for address, doc in documents.items():
                    for statement in doc.get("statement", []):
                        for action in statement["actions"]:
                            self.assertFalse(action.startswith(("ssm:", "kms:", "secretsmanager:")), f"{address}: {action}")
                        for resource in statement.get("resources", []):
                            self.assertFalse(any(arn in resource for arn in CREDENTIAL_SECRETS[variables["runner_type"]].values()))
                # The controller still reads them, through its own execution role.
                read = statements(p, "controller_execution[0]")["ReadControllerConfigAndCredentials"]["resources"]
                self.assertLessEqual(set(CREDENTIAL_SECRETS[variables["runner_type"]].values()), set(read))

    def test_task_definition(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                td = instance(p, "aws_ecs_task_definition.controller[0]").evaluate()
                self.assertEqual(td["family"], "hangar-controller")
                self.assertEqual(td["requires_compatibilities"], ["FARGATE"])
                self.assertEqual(td["network_mode"], "awsvpc")
                self.assertEqual(td["execution_role_arn"], Unknown("aws_iam_role.controller_execution[0].arn"))
                self.assertEqual(td["task_role_arn"], Unknown("aws_iam_role.controller_task[0].arn"))
                c = controller_container(p)
                self.assertEqual(c["image"], p.var_values["runner_image"])
                self.assertEqual(c["entryPoint"], ["/usr/bin/tini", "--", "/usr/local/bin/hangar"])
                self.assertEqual(c["command"], ["controller"])
                self.assertEqual(c["user"], "1001")
                self.assertIs(c["readonlyRootFilesystem"], True)
                self.assertEqual(c["portMappings"], [{"containerPort": 9464, "protocol": "tcp"}])
                env = {e["name"]: e["value"] for e in c["environment"]}
                self.assertEqual(env, {"HANGAR_LOG_FORMAT": "json", "AWS_REGION": "us-east-1"})
                self.assertEqual(
                    {s["name"]: s["valueFrom"] for s in c["secrets"]},
                    {"HANGAR_CONFIG_TOML": f"{PARAM_ARN}/controller/config", **CREDENTIAL_SECRETS[variables["runner_type"]]},
                )
                self.assertFalse(CREDENTIAL_NAMES & set(env))
                self.assertFalse(any(PREFIX in v for v in env.values()))
                logs = c["logConfiguration"]
                self.assertEqual(logs["logDriver"], "awslogs")
                self.assertEqual(logs["options"]["awslogs-group"], "awslogs-hangar-controller")
                self.assertEqual(logs["options"]["awslogs-region"], "us-east-1")

    def test_a_changed_pool_file_gives_a_new_task_definition(self):
        def label(variables):
            c = controller_container(plan(variables))
            return c["dockerLabels"]["hangar.config-sha256"]

        base = {**ORG, "enable_controller": True}
        text = instance(plan(base), "aws_ssm_parameter.controller_config[0]").evaluate()["value"]
        self.assertEqual(label(base), hashlib.sha256(text.encode()).hexdigest())
        self.assertNotEqual(label(base), label({**base, "controller_max": 11}))
        self.assertEqual(label(base), label({**base, "desired_count": 3}), "only the pool file counts")

    def test_service_is_a_single_private_controller(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                s = instance(p, "aws_ecs_service.controller[0]").evaluate()
                self.assertEqual(s["name"], "hangar-controller")
                self.assertEqual(s["task_definition"], Unknown("aws_ecs_task_definition.controller[0].arn"))
                self.assertEqual(s["cluster"], Unknown("data.aws_ecs_cluster.this.arn"))
                self.assertEqual((s["desired_count"], s["launch_type"]), (1, "FARGATE"))
                self.assertEqual((s["deployment_minimum_healthy_percent"], s["deployment_maximum_percent"]), (0, 100))
                self.assertIs(s["enable_execute_command"], False)
                (network,) = s["network_configuration"]
                self.assertIs(network["assign_public_ip"], False)
                self.assertEqual(network["subnets"], p.var_values["private_subnet_ids"])
                self.assertEqual(network["security_groups"], p.var_values["security_group_ids"])

    def test_log_group_and_outputs(self):
        key = CONTROLLER_KEY
        p = plan({**ORG, "enable_controller": True, "log_retention_in_days": 365, "cloudwatch_log_group_kms_key_id": key})
        group = instance(p, "aws_cloudwatch_log_group.controller[0]").evaluate()
        self.assertEqual((group["name"], group["retention_in_days"], group["kms_key_id"]), ("awslogs-hangar-controller", 365, key))
        self.assertEqual(p.output("controller_service_name"), "hangar-controller")
        self.assertEqual(p.output("controller_config_parameter_name"), f"{PREFIX}/controller/config")
        self.assertEqual(p.output("controller_log_group_name"), "awslogs-hangar-controller")


class ControllerIam(unittest.TestCase):
    def test_execution_role_reads_exactly_its_secrets(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                st = statements(p, "controller_execution[0]")
                self.assertEqual(set(st), {"ReadControllerConfigAndCredentials", "DecryptControllerCredentials", "WriteControllerLogs"})
                credentials = list(CREDENTIAL_SECRETS[variables["runner_type"]].values())
                read = st["ReadControllerConfigAndCredentials"]
                self.assertEqual(read["actions"], ["ssm:GetParameters"])
                self.assertEqual(read["resources"], [f"{PARAM_ARN}/controller/config", *credentials])
                c = json.loads(instance(p, "aws_ecs_task_definition.controller[0]").evaluate()["container_definitions"])[0]
                self.assertEqual(sorted(s["valueFrom"] for s in c["secrets"]), sorted(read["resources"]))
                decrypt = st["DecryptControllerCredentials"]
                self.assertEqual((decrypt["actions"], decrypt["resources"]), (["kms:Decrypt"], [SSM_MANAGED_KEY]))
                conditions = {c["variable"]: (c["test"], c["values"]) for c in decrypt["condition"]}
                self.assertEqual(conditions["kms:ViaService"], ("StringEquals", ["ssm.us-east-1.amazonaws.com"]))
                self.assertEqual(conditions["kms:EncryptionContext:PARAMETER_ARN"], ("StringEquals", credentials))
                logs = st["WriteControllerLogs"]
                self.assertEqual(logs["resources"], ["${aws_cloudwatch_log_group.controller[0].arn}:*"])
                role = instance(p, "aws_iam_role.controller_execution[0]").evaluate()
                self.assertEqual(role["assume_role_policy"], Unknown("data.aws_iam_policy_document.execution_assume.json"))

    def test_task_role_statements(self):
        cluster = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/your-ecs-cluster-name"
        tasks = f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/your-ecs-cluster-name/*"
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                st = statements(p, "controller_task[0]")
                families = sorted(
                    f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/"
                    + instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate()["family"]
                    + ":*"
                    for key in expected_keys(variables)
                )
                jit_folders = [f"{PARAM_ARN}/jit/*"]

                def conditions(sid):
                    return {c["variable"]: (c["test"], c["values"]) for c in st[sid].get("condition", [])}

                expected = {
                    "RunRunnerTasks": (["ecs:RunTask"], families, {"ecs:cluster": ("ArnEquals", [cluster])}),
                    "TagRunnerTasksAtLaunch": (["ecs:TagResource"], [tasks], {"ecs:CreateAction": ("StringEquals", ["RunTask"])}),
                    "ObserveAndStopClusterTasks": (["ecs:DescribeTasks", "ecs:StopTask"], [tasks], {}),
                    "ListClusterTasks": (["ecs:ListTasks"], ["*"], {"ecs:cluster": ("ArnEquals", [cluster])}),
                    "CheckCluster": (["ecs:DescribeClusters"], [cluster], {}),
                    "CheckTaskDefinitions": (["ecs:DescribeTaskDefinition"], ["*"], {}),
                    # The execution role and every key's task role, no other.
                    "PassRunnerRoles": (
                        ["iam:PassRole"],
                        ["${aws_iam_role.execution.arn}"] + [f'${{aws_iam_role.task["{key}"].arn}}' for key in sorted(expected_keys(variables))],
                        {"iam:PassedToService": ("StringEquals", ["ecs-tasks.amazonaws.com"])},
                    ),
                    # Under <prefix>/jit/ only (every pool's folder).
                    "WriteOneShotJitConfig": (["ssm:DeleteParameter", "ssm:PutParameter"], jit_folders, {}),
                    "FindLeftoverJitConfig": (["ssm:DescribeParameters"], ["*"], {}),
                    "EncryptOneShotJitConfig": (
                        ["kms:Encrypt", "kms:GenerateDataKey"],
                        [SSM_MANAGED_KEY],
                        {
                            "kms:ViaService": ("StringEquals", ["ssm.us-east-1.amazonaws.com"]),
                            "kms:EncryptionContext:PARAMETER_ARN": ("StringLike", jit_folders),
                        },
                    ),
                }
                self.assertEqual(set(st), set(expected))
                for sid, (actions, resources, conds) in expected.items():
                    self.assertEqual(st[sid]["actions"], actions, sid)
                    self.assertEqual(st[sid]["resources"], resources, sid)
                    self.assertEqual(conditions(sid), conds, sid)
                role = instance(p, "aws_iam_role.controller_task[0]").evaluate()
                self.assertEqual(role["assume_role_policy"], Unknown("data.aws_iam_policy_document.task_assume.json"))

    def test_runners_take_their_jit_config_forced_on(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan({**variables, "enable_jit_config_parameters": False})
                for key in expected_keys(variables):
                    st = statements(p, f'task_jit["{key}"]')
                    self.assertEqual(st["TakeOneShotJitConfig"]["resources"], [f"{PARAM_ARN}/jit/{key}/*"])
                # The controller's parameter_prefix is where the runners' folders are.
                self.assertEqual({pool["ecs"]["parameter_prefix"] for pool in pool_file(p)["pool"]}, {f"{PREFIX}/jit"})

    def test_jit_parameters_use_the_key_the_controller_writes_with(self):
        # With kms_key_arn, the controller's pools write the one-shot parameters with it
        # (kms_key_id), so every key permission names it and alias/aws/ssm is not looked up.
        p = plan({**ORG, "enable_controller": True, "kms_key_arn": CONTROLLER_KEY})
        self.assertNotIn("data.aws_kms_alias.ssm[0]", p.all_instances("data"))
        self.assertEqual({pool["ecs"]["kms_key_id"] for pool in pool_file(p)["pool"]}, {CONTROLLER_KEY})
        self.assertEqual(statements(p, 'task_jit["org"]')["DecryptOneShotJitConfig"]["resources"], [CONTROLLER_KEY])
        self.assertEqual(statements(p, "controller_task[0]")["EncryptOneShotJitConfig"]["resources"], [CONTROLLER_KEY])
        self.assertEqual(statements(p, "controller_execution[0]")["DecryptControllerCredentials"]["resources"], [CONTROLLER_KEY])
        self.assertNotIn("data.aws_iam_policy_document.execution_credentials[0]", p.all_instances("data"))
        # Without the controller, one-shot parameters are whoever's writes them, with kms_key_arn.
        off = plan({**ORG, "enable_jit_config_parameters": True, "kms_key_arn": CONTROLLER_KEY})
        self.assertEqual(statements(off, 'task_jit["org"]')["DecryptOneShotJitConfig"]["resources"], [CONTROLLER_KEY])

    def test_controller_policies_fit_iam_for_the_largest_pool_file(self):
        # IAM allows 10,240 characters (white space not counted) of inline policies per role. The
        # controller's grow with its pools (task definition families, task roles), whose number
        # the 8 KB pool file bounds: the most pools of the shortest names, and of a long prefix.
        longest_role = f"arn:aws:iam::{ACCOUNT}:role/" + "x" * 64

        def inline_size(p: Plan, role: str) -> int:
            text = json.dumps(list(role_documents(p, role).values()))
            text = re.sub(r"\$\{aws_iam_role\.[^}]*\.arn\}", longest_role, text)
            return len(re.sub(r"\s", "", text))

        for prefix in ("/a", PREFIX, "/" + "/".join(["segment-abcdefghij"] * 8)):
            for name_length in (1, 32):
                with self.subTest(prefix=prefix, name_length=name_length):
                    largest, count = None, 1
                    while count < 100:
                        repositories = [f"{i:02d}" + "r" * (name_length - 2) if name_length > 2 else f"r{i}" for i in range(count)]
                        p = plan(
                            {
                                "runner_type": "standalone",
                                "enable_controller": True,
                                "enable_execute_command": True,
                                "github_repository_name": repositories,
                                "ssm_parameter_prefix": prefix,
                                "private_subnet_ids": ["subnet-0"],
                                "security_group_ids": ["sg-0"],
                                "runner_labels": ["x"],
                            }
                        )
                        if preconditions_failing(p):
                            break
                        largest, count = p, count + 1
                    self.assertGreater(count, 10)
                    self.assertLess(inline_size(largest, "aws_iam_role.controller_task[0]"), 10240)
                    for key in largest.local("runners"):
                        self.assertLess(inline_size(largest, f'aws_iam_role.task["{key}"]'), 10240)

    def test_controller_policies_are_attached_to_its_roles(self):
        p = plan({**ORG, "enable_controller": True})
        for name in ("controller_execution", "controller_task"):
            r = instance(p, f"aws_iam_role_policy.{name}[0]").evaluate()
            self.assertEqual(
                (r["role"], r["policy"]),
                (Unknown(f"aws_iam_role.{name}[0].id"), Unknown(f"data.aws_iam_policy_document.{name}[0].json")),
            )


################################################################################
# checkov skips and the README
################################################################################


class Documentation(unittest.TestCase):
    def test_every_checkov_skip_has_a_reason(self):
        skips = []
        for path in MODULE_DIR.glob("*.tf"):
            resource = None
            for line in path.read_text().splitlines():
                header = re.match(r'^resource "([a-z0-9_]+)" "([a-z0-9_]+)"', line)
                if header:
                    resource = header.groups()
                if "checkov:skip" in line:
                    m = re.match(r"^\s*#checkov:skip=(CKV2?_AWS_\d+):(.+)$", line)
                    self.assertIsNotNone(m, f"{path.name}: malformed skip: {line.strip()}")
                    self.assertIsNotNone(resource, f"{path.name}: {m.group(1)} is skipped outside a resource")
                    self.assertGreater(len(m.group(2).strip()), 60, f"{path.name}: {m.group(1)} needs a real reason")
                    skips.append((resource, m.group(1)))
        self.assertEqual(len(skips), len(set(skips)), "each check skipped once per resource")

    def test_checkov_tfvars_are_a_valid_deployment(self):
        # checkov's second run (scripts/lint-terraform) plans with these: they must be values
        # `terraform plan` accepts, preconditions included.
        import hcl2

        from hcl_eval import _parse_body, _trees

        text = (MODULE_DIR / "tests" / "checkov-all-features.tfvars").read_text()
        attrs, blocks = _parse_body(_trees(hcl2.parses_to_tree(text))[0], "checkov-all-features.tfvars")
        self.assertEqual(blocks, [])
        literal = Evaluator(Plan(MODULE, STANDALONE, STUBS))
        variables = {name: literal.eval(expr) for name, expr in attrs.items()}
        self.assertEqual(variables["repository_credentials_secret_arn"][:4], "arn:")
        p = plan(variables)
        for rtype, name in (
            ("aws_ssm_parameter", "controller_config"),
            ("aws_iam_role_policy", "task_jit"),
            ("aws_iam_role_policy", "execution_registry_credentials"),
        ):
            self.assertEqual(preconditions_of(p, rtype, name), [], name)
        self.assertIn("aws_iam_role_policy.controller_registry_credentials[0]", resource_addresses(p))

    def test_readme_lists_every_input_and_output(self):
        readme = (MODULE_DIR / "README.md").read_text()
        for name in list(MODULE.variables) + list(MODULE.outputs):
            with self.subTest(name):
                self.assertRegex(readme, rf"\|\s*`{re.escape(name)}`\s*\|")
        self.assertIn("""-replace='aws_ecs_service.github_runner["your-repository-name"]'""", readme)
        self.assertIn("""-replace='aws_ecs_service.github_runner["org"]'""", readme)


################################################################################
# Terraform itself agrees with the mirror on variables and locals
################################################################################

# What locals.tf reads from data sources, replaced by the stubs for Terraform (no provider here).
DATA_REFERENCES = {
    "data.aws_partition.current.partition": json.dumps(STUBS[("data", "aws_partition", "current")]["partition"]),
    "data.aws_caller_identity.current.account_id": json.dumps(ACCOUNT),
    "data.aws_kms_alias.ssm[*].target_key_arn": f"(var.kms_key_arn == null ? [{json.dumps(SSM_MANAGED_KEY)}] : [])",
}
COMPARED_LOCALS = [
    "runners",
    "common_environment",
    "container_secrets",
    "runner_container_credentials",
    "credential_parameter_arns",
    "kms_key_arn",
    "cluster_task_arn_pattern",
    "runner_jit_parameter_arn_patterns",
    "jit_parameter_arn_pattern",
    "ecr_image_pattern",
    "image_ecr_repository_arn",
    "image_pull_container_settings",
    "grant_jit_config_parameters",
    "jit_kms_key_arn",
    "cluster_arn",
    "runner_task_definition_arn_patterns",
    "controller_pools",
    "controller_config_toml",
    "controller_config_sha256",
]


@unittest.skipUnless(shutil.which("terraform"), "terraform is not on PATH")
class TerraformAgrees(unittest.TestCase):
    """variables.tf and locals.tf, evaluated by Terraform itself, give what the mirror gives."""

    @classmethod
    def setUpClass(cls):
        cls.dir = Path(tempfile.mkdtemp(prefix="hangar-tf-"))
        shutil.copy(MODULE_DIR / "variables.tf", cls.dir)
        text = (MODULE_DIR / "locals.tf").read_text()
        for ref, replacement in DATA_REFERENCES.items():
            text = text.replace(ref, replacement)
        leftover = re.findall(r"\bdata\.[a-z_]+\.[a-z_]+", text)
        if leftover:
            raise AssertionError(f"locals.tf reads data sources the test does not stub: {leftover}")
        (cls.dir / "locals.tf").write_text(text)
        outputs = "".join(f'output "{n}" {{\n  value = local.{n}\n}}\n' for n in COMPARED_LOCALS)
        (cls.dir / "outputs.tf").write_text(outputs)
        cls.env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
        cls.env.update(TF_IN_AUTOMATION="1", TF_DATA_DIR=str(cls.dir / ".terraform"))
        cls.run_tf(["init", "-input=false", "-backend=false"])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def run_tf(cls, args, check=True):
        result = subprocess.run(
            ["terraform", *args], cwd=cls.dir, env=cls.env, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    @classmethod
    def var_args(cls, variables: dict) -> list:
        args = []
        for name, value in variables.items():
            rendered = value if isinstance(value, str) else json.dumps(value)
            args.append(f"-var={name}={rendered}")
        return args

    def terraform_locals(self, variables: dict) -> dict:
        state = self.dir / f"{abs(hash(json.dumps(variables, sort_keys=True)))}.tfstate"
        self.run_tf(["apply", "-auto-approve", "-input=false", "-no-color", f"-state={state}", *self.var_args(variables)])
        out = self.run_tf(["output", f"-state={state}", "-json"]).stdout
        values = {name: o["value"] for name, o in json.loads(out).items()}
        # An output whose value is null is left out of the state: it is null.
        return {name: values.get(name) for name in COMPARED_LOCALS}

    def test_locals_match(self):
        key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        cases = {
            **MODES,
            **CONTROLLER_MODES,
            "org with options": {**ORG, "runner_group": "ci", "kms_key_arn": key, "drain_timeout_seconds": 5},
            # Terraform's own jsonencode quotes these for the pool file as the mirror does.
            "org + controller with quoting": {
                **ORG,
                "enable_controller": True,
                "kms_key_arn": key,
                "runner_group": 'ci "blue"',
                "runner_labels": ["gpu", 'a\\b"c'],
                "controller_min_idle": 2,
                "controller_max": 5,
            },
            "an ECR image in another account and region, by digest": {
                **ORG,
                "enable_controller": True,
                "runner_image": f"210987654321.dkr.ecr.eu-west-1.amazonaws.com/team/hangar-runner@sha256:{'0' * 64}",
            },
            "an ECR image in China": {**STANDALONE, "runner_image": f"{ACCOUNT}.dkr.ecr.cn-north-1.amazonaws.com.cn/hangar-runner:1"},
            "a private registry with credentials": {
                **STANDALONE,
                "enable_controller": True,
                "runner_image": "ghcr.io/your-organization/hangar-runner:1.2.3",
                "repository_credentials_secret_arn": REGISTRY_SECRET,
            },
            "standalone + controller with odd names": {
                "runner_type": "standalone",
                "enable_controller": True,
                "github_repository_name": ["My.Repo_Name", "x" * 40 + "-tail"],
            },
        }
        for label, variables in cases.items():
            with self.subTest(label):
                p = plan(variables)
                mirror = {n: to_plain(p.local(n)) for n in COMPARED_LOCALS}
                self.assertEqual(self.terraform_locals(variables), mirror)

    def test_validations_match(self):
        for variables in (
            {"runner_type": "organization"},
            {"runner_type": "standalone", "github_repository_name": ["my.repo", "my-repo"]},
            {"runner_type": "standalone", "ssm_parameter_prefix": "/trailing/"},
            {"runner_type": "standalone", "drain_timeout_seconds": 86},
            {"runner_type": "standalone", "runner_image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/Hangar:latest"},
            {"runner_type": "standalone", "repository_credentials_secret_arn": "hangar/registry"},
        ):
            with self.subTest(variables):
                mirror = Plan(MODULE, variables, STUBS).validation_errors()
                self.assertTrue(mirror)
                result = self.run_tf(["plan", "-input=false", "-no-color", *self.var_args(variables)], check=False)
                self.assertNotEqual(result.returncode, 0)
                output = re.sub(r"\s+", " ", re.sub(r"[│╷╵]", " ", result.stderr))
                for error in mirror:
                    message = error.split(": ", 1)[1]
                    self.assertIn(re.sub(r"\s+", " ", message), output)


if __name__ == "__main__":
    unittest.main()
