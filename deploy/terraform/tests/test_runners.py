"""The runners' log groups, task definitions (container, environment, secrets, Fargate, names)
and ECS services, in each mode.

Shared fixtures and helpers: module_plan.py.
"""

from __future__ import annotations

import json
import re
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import Unknown  # noqa: E402
from module_plan import (  # noqa: E402
    ACCOUNT,
    CREDENTIAL_NAMES,
    CREDENTIAL_SECRETS,
    MODES,
    MODULE_DIR,
    ORG,
    PREFIX,
    container,
    expected_keys,
    instance,
    plan,
)


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


if __name__ == "__main__":
    unittest.main()
