"""What the module declares and accepts: every file parses, the versions, the variables (the
seed's interface, descriptions, validations) and, for each mode, the resource addresses and
the outputs.

Shared fixtures and helpers: module_plan.py.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import Evaluator, Plan, Unknown  # noqa: E402
from module_plan import (  # noqa: E402
    ACCOUNT,
    CONTROLLER_ADDRESSES,
    CONTROLLER_MODES,
    DEFAULT_IMAGE,
    MODES,
    MODULE,
    MODULE_DIR,
    ORG,
    OTHER_VARIABLES,
    PREFIX,
    REGISTRY_SECRET,
    SEED_DEFAULTS,
    STANDALONE,
    STUBS,
    TWO_REPOS,
    expected_keys,
    plan,
    resource_addresses,
    statements,
)


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


if __name__ == "__main__":
    unittest.main()
