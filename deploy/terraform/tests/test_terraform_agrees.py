"""Terraform itself agrees with the mirror (hcl_eval.py): variables.tf and locals.tf, evaluated
by the real `terraform` when it is on PATH, give the same locals and validation errors.

Shared fixtures and helpers: module_plan.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import Plan, to_plain  # noqa: E402
from module_plan import (  # noqa: E402
    ACCOUNT,
    CONTROLLER_MODES,
    MODES,
    MODULE,
    MODULE_DIR,
    ORG,
    REGISTRY_SECRET,
    SSM_MANAGED_KEY,
    STANDALONE,
    STUBS,
    plan,
)


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
    "runner_pool_specs",
    "docker_capacity_provider_name",
    "docker_daemon_command",
    "docker_runner_environment",
    "docker_runner_settings",
    "docker_instance_user_data",
    "docker_ami_parameter",
]

# Pool shapes (test_shapes.py): Terraform's own type conversion (optional() defaults) and
# locals give what the mirror gives.
SHAPES = {
    "large": {"cpu": 4096, "memory": 16384, "ephemeral_storage_gib": 100, "capacity_providers": ["FARGATE_SPOT", "FARGATE"]},
    "arm64": {"cpu": 2048, "memory": 4096, "cpu_architecture": "ARM64"},
    "docker": {"cpu": 2048, "memory": 7168, "docker": True, "labels": ["docker", 'q"uote'], "min_idle": 1, "max": 4},
}


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
            "org + controller with shapes and Docker capacity": {
                **ORG,
                "enable_controller": True,
                "runner_group": "ci",
                "pool_shapes": SHAPES,
                "docker_capacity": {"instance_type": "m7i.large", "max_size": 3},
            },
            "standalone + controller with shapes, ARM64 Docker capacity": {
                **STANDALONE,
                "enable_controller": True,
                "github_repository_name": ["My.Repo_Name", "b"],
                "cpu_architecture": "ARM64",
                "pool_shapes": {"docker": {"cpu": 1024, "memory": 2048, "docker": True}, "big": {"cpu": 8192, "memory": 16384}},
                "docker_capacity": {"instance_type": "m7g.large", "cpu_architecture": "ARM64", "ami_id": "ami-0123456789abcdef0"},
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
            {"runner_type": "org", "pool_shapes": {"arm": {"cpu": 1024, "memory": 2048, "cpu_architecture": "arm64"}}},
            {"runner_type": "org", "pool_shapes": {"big": {"cpu": 1024, "memory": 2048, "ephemeral_storage_gib": 201}}},
            {"runner_type": "org", "pool_shapes": {"docker": {"cpu": 1024, "memory": 2048, "docker": True, "capacity_providers": ["FARGATE"]}}},
            {"runner_type": "org", "pool_shapes": {"Big": {"cpu": 3000, "memory": 2048}}},
            {"runner_type": "org", "docker_capacity": {"instance_type": "m7i.large", "min_size": 5, "max_size": 2}},
            # The controller's ingress: Terraform's own cidrhost/cidrsubnet/try agree with the mirror's.
            {"runner_type": "org", "controller_ingress_security_group_ids": ["sg-XYZ"]},
            {"runner_type": "org", "controller_ingress_cidr_blocks": ["10.20.0.5/24"]},
            {"runner_type": "org", "controller_ingress_cidr_blocks": ["10.20.0.0/33"]},
            {"runner_type": "org", "controller_ingress_cidr_blocks": ["010.20.0.0/24"]},
            {"runner_type": "org", "controller_ingress_cidr_blocks": ["fd00::/64"]},
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

    def test_good_ingress_values_are_accepted(self):
        for variables in (
            {"runner_type": "org", "enable_controller": True, "controller_ingress_cidr_blocks": ["0.0.0.0/0", "10.20.0.0/24", "172.16.5.4/32"]},
            {"runner_type": "org", "enable_controller": True, "controller_ingress_security_group_ids": ["sg-0aaaaaaaaaaaaaaa1"]},
        ):
            with self.subTest(variables):
                self.assertEqual(Plan(MODULE, variables, STUBS).validation_errors(), [])
                result = self.run_tf(["plan", "-input=false", "-no-color", *self.var_args(variables)], check=False)
                self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main()
