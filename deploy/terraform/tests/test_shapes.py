"""Pools for every job shape (pool_shapes) and the Docker capacity (docker_capacity): the extra
pools <key>-<shape>, their task definitions (Fargate sizes and storage, ARM64, the Docker
daemon sidecar), their task roles, their lines in the controller's pool file, the EC2 capacity
(launch template, Auto Scaling group, instance role, capacity provider, the cluster's provider
list), the validations and preconditions, and the default plan without any of it.

Shared fixtures and helpers: module_plan.py.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import EvalError, Plan, Unknown, to_plain  # noqa: E402
from module_plan import (  # noqa: E402
    ACCOUNT,
    CONTROLLER_MODES,
    MODES,
    MODULE,
    ORG,
    PARAM_ARN,
    PREFIX,
    SSM_MANAGED_KEY,
    STUBS,
    TWO_REPOS,
    all_policy_documents,
    allows,
    container,
    expected_keys,
    instance,
    plan,
    pool_file,
    preconditions_failing,
    preconditions_of,
    resource_addresses,
    role_documents,
    ssm_decrypt_context,
    statements,
)

CLUSTER_ARN = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/your-ecs-cluster-name"
PROVIDER = "hangar-docker-your-ecs-cluster-name"
EBS_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# The README's example: a large Fargate Spot shape with more storage, an ARM64 one and a Docker one.
SHAPES = {
    "large": {"cpu": 4096, "memory": 16384, "ephemeral_storage_gib": 100, "capacity_providers": ["FARGATE_SPOT", "FARGATE"]},
    "arm64": {"cpu": 2048, "memory": 4096, "cpu_architecture": "ARM64"},
    "docker": {"cpu": 2048, "memory": 7168, "docker": True, "labels": ["docker"], "min_idle": 1, "max": 4},
}
DOCKER_CAPACITY = {"instance_type": "m7i.large"}
SHAPED_ORG = {**ORG, "enable_controller": True, "pool_shapes": SHAPES, "docker_capacity": DOCKER_CAPACITY}
SHAPED_TWO = {**TWO_REPOS, "enable_controller": True, "pool_shapes": SHAPES, "docker_capacity": DOCKER_CAPACITY}
FARGATE_ONLY = {**ORG, "enable_controller": True, "pool_shapes": {k: v for k, v in SHAPES.items() if k != "docker"}}

DOCKER_ADDRESSES = {
    "aws_iam_role.docker_instance[0]",
    "aws_iam_role_policy.docker_instance[0]",
    "aws_iam_instance_profile.docker_instance[0]",
    "aws_launch_template.docker[0]",
    "aws_autoscaling_group.docker[0]",
    "aws_ecs_capacity_provider.docker[0]",
    "aws_ecs_cluster_capacity_providers.docker[0]",
}


def containers(p: Plan, key: str) -> list:
    definition = instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate()
    return json.loads(definition["container_definitions"])


def task_definition(p: Plan, key: str) -> dict:
    return to_plain(instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate())


def pool_keys(variables: dict) -> list:
    keys = expected_keys(variables)
    return keys + [f"{key}-{shape}" for key in keys for shape in variables.get("pool_shapes", {})]


def failing(variables: dict) -> list:
    p = plan(variables)
    return preconditions_of(p, "aws_ecs_task_definition", "github_runner") + preconditions_failing(p)


################################################################################
# Defaults: nothing new
################################################################################


class DefaultsUnchanged(unittest.TestCase):
    def test_the_default_plan_has_none_of_the_new_resources(self):
        for label, variables in {**MODES, **CONTROLLER_MODES}.items():
            with self.subTest(label):
                p = plan(variables)
                addresses = resource_addresses(p)
                self.assertFalse(DOCKER_ADDRESSES & addresses)
                self.assertFalse({a for a in addresses if "docker" in a})
                self.assertNotIn("data.aws_ssm_parameter.docker_ami[0]", p.all_instances("data"))
                self.assertEqual(sorted(p.local("runners")), sorted(expected_keys(variables)))
                # The new inputs at their defaults, given explicitly: the same plan, instance by instance.
                explicit = plan({**variables, "pool_shapes": {}, "docker_capacity": None})
                self.assertEqual(addresses, resource_addresses(explicit))
                for address in addresses:
                    self.assertEqual(
                        to_plain(instance(p, address).evaluate()), to_plain(instance(explicit, address).evaluate()), address
                    )
                self.assertIsNone(p.output("docker_capacity_provider_name"))
                self.assertIsNone(p.output("docker_autoscaling_group_name"))

    def test_the_default_pools_task_definitions_and_pool_lines_stay_with_shapes(self):
        # Adding shapes changes nothing of the key's own pool: its task definition and its lines.
        for base, shaped in ((plan({**ORG, "enable_controller": True}), plan(SHAPED_ORG)),
                             (plan({**TWO_REPOS, "enable_controller": True}), plan(SHAPED_TWO))):
            for key in base.local("runners"):
                with self.subTest(key):
                    self.assertEqual(task_definition(base, key), task_definition(shaped, key))
                    self.assertEqual(to_plain(instance(base, f'aws_iam_role.task["{key}"]').evaluate()),
                                     to_plain(instance(shaped, f'aws_iam_role.task["{key}"]').evaluate()))
            pools = {pool["name"]: pool for pool in pool_file(shaped)["pool"]}
            for pool in pool_file(base)["pool"]:
                self.assertEqual(pools[pool["name"]], pool)


################################################################################
# Addresses, task definitions
################################################################################


class Shapes(unittest.TestCase):
    def test_addresses(self):
        for variables in (SHAPED_ORG, SHAPED_TWO):
            with self.subTest(variables["runner_type"]):
                p = plan(variables)
                addresses = resource_addresses(p)
                keys = pool_keys(variables)
                self.assertEqual(sorted(p.local("runners")), sorted(keys))
                for key in keys:
                    for address in (
                        f'aws_ecs_task_definition.github_runner["{key}"]',
                        f'aws_cloudwatch_log_group.github_runner["{key}"]',
                        f'aws_iam_role.task["{key}"]',
                        f'aws_iam_role_policy.task["{key}"]',
                        f'aws_iam_role_policy.task_jit["{key}"]',
                    ):
                        self.assertIn(address, addresses)
                self.assertLessEqual(DOCKER_ADDRESSES, addresses)
                self.assertFalse({a for a in addresses if a.startswith("aws_ecs_service.github_runner")})
                self.assertIn("data.aws_ssm_parameter.docker_ami[0]", p.all_instances("data"))
                self.assertEqual(preconditions_of(p, "aws_ecs_task_definition", "github_runner"), [])
                self.assertEqual(preconditions_failing(p), [])
        fargate = resource_addresses(plan(FARGATE_ONLY))
        self.assertFalse({a for a in fargate if "docker" in a}, "Fargate shapes need no Docker capacity")

    def test_names(self):
        p = plan(SHAPED_TWO)
        runner = p.local("runners")["another-repo-large"]
        self.assertEqual(runner["name"], "github-runner-standalone-another-repo-large")
        self.assertEqual(runner["log_group_name"], "awslogs-github-runner-standalone-another-repo-large")
        self.assertEqual(runner["pool_name"], "another-repo-large")
        self.assertEqual(instance(p, 'aws_iam_role.task["another-repo-large"]').evaluate()["name_prefix"], "github-runner-another-repo-large-task-")
        self.assertEqual(instance(p, 'aws_iam_role.task["your-repository-name-docker"]').evaluate()["name_prefix"], "github-runner-your-repository-na-task-")
        self.assertEqual(p.output("pool_names")["your-repository-name-docker"], "your-repository-name-docker")
        # The repository a shape's runner registers for is its key's.
        env = {e["name"]: e["value"] for e in container(plan(FARGATE_ONLY | {"runner_type": "standalone"}), "your-repository-name-large")["environment"]}
        self.assertEqual(env["GITHUB_REPOSITORY"], "your-organization/your-repository-name")
        for key in pool_keys(SHAPED_TWO):
            role = instance(p, f'aws_iam_role.task["{key}"]').evaluate()
            self.assertLessEqual(len(role["name_prefix"]), 38)

    def test_large_fargate_shape(self):
        p = plan(SHAPED_ORG)
        td = task_definition(p, "org-large")
        self.assertEqual(td["requires_compatibilities"], ["FARGATE"])
        self.assertEqual((td["cpu"], td["memory"]), (4096, 16384))
        self.assertEqual(td["ephemeral_storage"], [{"size_in_gib": 100}])
        self.assertEqual(td["runtime_platform"], [{"cpu_architecture": "X86_64", "operating_system_family": "LINUX"}])
        self.assertNotIn("volume", td)
        (runner,) = containers(p, "org-large")
        self.assertEqual(runner["name"], "github-runner-org-org-large")
        # The same runner container as the key's own pool, but for its name and log group.
        own = container(p, "org")
        self.assertEqual(
            {**runner, "name": own["name"], "logConfiguration": own["logConfiguration"]}, own
        )
        self.assertEqual(runner["logConfiguration"]["options"]["awslogs-group"], "awslogs-github-runner-org-org-large")

    def test_arm64_shape(self):
        p = plan(SHAPED_ORG)
        td = task_definition(p, "org-arm64")
        self.assertEqual(td["runtime_platform"], [{"cpu_architecture": "ARM64", "operating_system_family": "LINUX"}])
        self.assertEqual(td["requires_compatibilities"], ["FARGATE"])
        self.assertNotIn("ephemeral_storage", td, "no ephemeral_storage block when the shape sets none")
        # cpu_architecture null: the module's cpu_architecture.
        q = plan({**SHAPED_ORG, "cpu_architecture": "ARM64", "pool_shapes": {"plain": {"cpu": 512, "memory": 1024}}, "docker_capacity": None})
        self.assertEqual(task_definition(q, "org-plain")["runtime_platform"][0]["cpu_architecture"], "ARM64")

    def test_docker_task_definition(self):
        p = plan(SHAPED_ORG)
        td = task_definition(p, "org-docker")
        self.assertEqual(td["requires_compatibilities"], ["EC2"])
        self.assertEqual(td["network_mode"], "awsvpc")
        self.assertEqual((td["cpu"], td["memory"]), (2048, 7168))
        self.assertNotIn("ephemeral_storage", td)
        self.assertEqual(
            td["volume"],
            [
                {"name": name, "docker_volume_configuration": [{"scope": "task", "driver": "local"}]}
                for name in ("docker-socket", "docker-data")
            ],
        )
        runner, daemon = containers(p, "org-docker")
        # The runner: as a Fargate pool's runner, plus the daemon's address, the socket and dependsOn.
        self.assertEqual(runner["name"], "github-runner-org-org-docker")
        self.assertNotIn("privileged", runner)
        self.assertNotIn("user", runner)
        env = runner["environment"]
        self.assertEqual(env[-2:], [{"name": "HANGAR_DOCKER", "value": "1"}, {"name": "DOCKER_HOST", "value": "unix:///var/run/hangar-docker/docker.sock"}])
        self.assertEqual(runner["mountPoints"], [{"sourceVolume": "docker-socket", "containerPath": "/var/run/hangar-docker", "readOnly": False}])
        self.assertEqual(runner["dependsOn"], [{"containerName": "docker", "condition": "START"}])
        own = container(p, "org")
        plain = {k: v for k, v in runner.items() if k not in ("mountPoints", "dependsOn")}
        self.assertEqual({**plain, "environment": env[:-2], "name": own["name"], "logConfiguration": own["logConfiguration"]}, own)
        # The sidecar.
        self.assertEqual(daemon["name"], "docker")
        self.assertEqual(daemon["image"], "public.ecr.aws/docker/library/docker:28.3.3-dind")
        self.assertIs(daemon["privileged"], True)
        self.assertIs(daemon["essential"], True)
        self.assertEqual(daemon["command"], ["dockerd", "--host=unix:///var/run/hangar-docker/docker.sock", "--group=1001"])
        self.assertEqual(daemon["environment"], [{"name": "DOCKER_TLS_CERTDIR", "value": ""}])
        self.assertGreater(daemon["memoryReservation"], 0)
        self.assertEqual(
            daemon["mountPoints"],
            [
                {"sourceVolume": "docker-socket", "containerPath": "/var/run/hangar-docker", "readOnly": False},
                {"sourceVolume": "docker-data", "containerPath": "/var/lib/docker", "readOnly": False},
            ],
        )
        self.assertEqual(daemon["logConfiguration"]["options"]["awslogs-stream-prefix"], "docker")
        self.assertEqual(daemon["logConfiguration"]["options"]["awslogs-group"], "awslogs-github-runner-org-org-docker")
        self.assertNotIn("secrets", daemon)
        self.assertNotIn("repositoryCredentials", daemon)
        # The socket volume is in these two containers only, the data volume in the sidecar only;
        # no other pool's task has either.
        for key in pool_keys(SHAPED_ORG):
            for c in containers(p, key):
                mounted = {m["sourceVolume"] for m in c.get("mountPoints", [])}
                if key != "org-docker":
                    self.assertEqual(mounted, set(), f"{key}/{c['name']}")
                    self.assertFalse(c.get("privileged", False))
                elif c["name"] == "docker":
                    self.assertEqual(mounted, {"docker-socket", "docker-data"})
                else:
                    self.assertEqual(mounted, {"docker-socket"})
        mirrored = plan({**SHAPED_ORG, "docker_daemon_image": "mirror.example.com/docker:28-dind"})
        self.assertEqual(containers(mirrored, "org-docker")[1]["image"], "mirror.example.com/docker:28-dind")

    def test_docker_shape_privileged_only_in_its_sidecar_and_with_the_controller_runner_has_no_credentials(self):
        p = plan(SHAPED_ORG)
        runner, daemon = containers(p, "org-docker")
        self.assertNotIn("secrets", runner)
        self.assertEqual([c["name"] for c in containers(p, "org-docker") if c.get("privileged")], ["docker"])


################################################################################
# The Docker capacity
################################################################################


class DockerCapacity(unittest.TestCase):
    def test_launch_template(self):
        p = plan(SHAPED_ORG)
        lt = to_plain(instance(p, "aws_launch_template.docker[0]").evaluate())
        self.assertEqual(lt["instance_type"], "m7i.large")
        self.assertEqual(lt["image_id"], "${data.aws_ssm_parameter.docker_ami[0].value}")
        self.assertEqual(
            lt["metadata_options"],
            [{"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1, "instance_metadata_tags": "disabled"}],
        )
        (nic,) = lt["network_interfaces"]
        self.assertIs(nic["associate_public_ip_address"], False)
        self.assertEqual(nic["security_groups"], p.var_values["security_group_ids"])
        (disk,) = lt["block_device_mappings"]
        self.assertEqual(disk["device_name"], "/dev/xvda")
        (ebs,) = disk["ebs"]
        self.assertIs(ebs["encrypted"], True)
        self.assertIs(ebs["delete_on_termination"], True)
        self.assertEqual((ebs["volume_type"], ebs["volume_size"], ebs["kms_key_id"]), ("gp3", 100, None))
        self.assertEqual(lt["iam_instance_profile"], [{"arn": "${aws_iam_instance_profile.docker_instance[0].arn}"}])
        with_key = plan({**SHAPED_ORG, "docker_capacity": {**DOCKER_CAPACITY, "root_volume_kms_key_arn": EBS_KEY, "root_volume_size_gib": 200}})
        (ebs,) = to_plain(instance(with_key, "aws_launch_template.docker[0]").evaluate())["block_device_mappings"][0]["ebs"]
        self.assertEqual((ebs["kms_key_id"], ebs["volume_size"]), (EBS_KEY, 200))

    def test_user_data_configures_the_ecs_agent(self):
        lt = instance(plan(SHAPED_ORG), "aws_launch_template.docker[0]").evaluate()
        script = base64.b64decode(lt["user_data"]).decode()
        self.assertTrue(script.startswith("#!/bin/bash\n"))
        lines = script.splitlines()
        config = lines[lines.index("cat > /etc/ecs/ecs.config <<'HANGAR_ECS_CONFIG'") + 1 : lines.index("HANGAR_ECS_CONFIG")]
        settings = dict(line.split("=", 1) for line in config)
        self.assertEqual(
            settings,
            {
                "ECS_CLUSTER": "your-ecs-cluster-name",
                "ECS_AWSVPC_BLOCK_IMDS": "true",
                "ECS_ENABLE_TASK_IAM_ROLE": "true",
                "ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST": "false",
                "ECS_DISABLE_PRIVILEGED": "false",
                "ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE": "true",
                "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION": "1m",
            },
        )

    def test_ami_per_architecture_or_given(self):
        x86 = plan(SHAPED_ORG).all_instances("data")["data.aws_ssm_parameter.docker_ami[0]"].evaluate()
        self.assertEqual(x86["name"], "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")
        arm = {**SHAPED_ORG, "pool_shapes": {"docker": {**SHAPES["docker"], "cpu_architecture": "ARM64"}},
               "docker_capacity": {"instance_type": "m7g.large", "cpu_architecture": "ARM64"}}
        p = plan(arm)
        self.assertEqual(p.all_instances("data")["data.aws_ssm_parameter.docker_ami[0]"].evaluate()["name"],
                         "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id")
        self.assertEqual(preconditions_of(p, "aws_ecs_task_definition", "github_runner"), [])
        given = plan({**SHAPED_ORG, "docker_capacity": {**DOCKER_CAPACITY, "ami_id": "ami-0123456789abcdef0"}})
        self.assertNotIn("data.aws_ssm_parameter.docker_ami[0]", given.all_instances("data"))
        self.assertEqual(instance(given, "aws_launch_template.docker[0]").evaluate()["image_id"], "ami-0123456789abcdef0")

    def test_auto_scaling_group(self):
        p = plan({**SHAPED_ORG, "docker_capacity": {**DOCKER_CAPACITY, "min_size": 1, "max_size": 6}})
        asg = to_plain(instance(p, "aws_autoscaling_group.docker[0]").evaluate())
        self.assertEqual(asg["vpc_zone_identifier"], p.var_values["private_subnet_ids"])
        self.assertEqual((asg["min_size"], asg["max_size"]), (1, 6))
        self.assertIs(asg["protect_from_scale_in"], True)
        self.assertEqual(asg["launch_template"], [{"id": "${aws_launch_template.docker[0].id}", "version": "${aws_launch_template.docker[0].latest_version}"}])
        self.assertEqual(asg["tag"], [{"key": "AmazonECSManaged", "value": "true", "propagate_at_launch": True}])
        block = MODULE.resources("resource")[("aws_autoscaling_group", "docker")]
        (lifecycle,) = block.nested("lifecycle")
        self.assertIn("desired_capacity", str(lifecycle.attrs["ignore_changes"]))

    def test_capacity_provider_and_cluster_association(self):
        p = plan(SHAPED_ORG)
        provider = to_plain(instance(p, "aws_ecs_capacity_provider.docker[0]").evaluate())
        self.assertEqual(provider["name"], PROVIDER)
        self.assertFalse(provider["name"].lower().startswith(("aws", "ecs", "fargate")))
        (asg,) = provider["auto_scaling_group_provider"]
        self.assertEqual(asg["auto_scaling_group_arn"], "${aws_autoscaling_group.docker[0].arn}")
        self.assertEqual(asg["managed_termination_protection"], "ENABLED")
        (scaling,) = asg["managed_scaling"]
        self.assertEqual((scaling["status"], scaling["target_capacity"]), ("ENABLED", 100))
        association = to_plain(instance(p, "aws_ecs_cluster_capacity_providers.docker[0]").evaluate())
        self.assertEqual(association["cluster_name"], "your-ecs-cluster-name")
        # It owns the cluster's whole list: Fargate's providers are kept on it.
        self.assertEqual(association["capacity_providers"], ["FARGATE", "FARGATE_SPOT", PROVIDER])
        self.assertEqual(p.output("docker_capacity_provider_name"), PROVIDER)

    def test_instance_role_is_the_ecs_agent_of_this_cluster_only(self):
        p = plan({**SHAPED_ORG, "iam_role_permissions_boundary": f"arn:aws:iam::{ACCOUNT}:policy/boundary"})
        role = instance(p, "aws_iam_role.docker_instance[0]").evaluate()
        self.assertEqual(role["permissions_boundary"], f"arn:aws:iam::{ACCOUNT}:policy/boundary")
        trust = to_plain(instance(p, "data.aws_iam_policy_document.docker_instance_assume[0]").evaluate())
        (statement,) = trust["statement"]
        self.assertEqual(statement["principals"], [{"type": "Service", "identifiers": ["ec2.amazonaws.com"]}])
        profile = instance(p, "aws_iam_instance_profile.docker_instance[0]").evaluate()
        self.assertEqual(profile["role"], Unknown("aws_iam_role.docker_instance[0].name"))
        documents = role_documents(p, "aws_iam_role.docker_instance[0]")
        self.assertEqual(list(documents), ["data.aws_iam_policy_document.docker_instance[0]"])
        granted = {a for d in documents.values() for s in d["statement"] for a in s["actions"]}
        self.assertEqual(
            granted,
            {
                "ecs:DeregisterContainerInstance", "ecs:RegisterContainerInstance", "ecs:SubmitAttachmentStateChanges",
                "ecs:SubmitContainerStateChange", "ecs:SubmitTaskStateChange", "ecs:Poll", "ecs:StartTelemetrySession",
                "ecs:UpdateContainerInstancesState", "ecs:DiscoverPollEndpoint",
            },
        )
        own = {"ecs:cluster": CLUSTER_ARN}
        other_cluster = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/production"
        instance_arn = f"arn:aws:ecs:us-east-1:{ACCOUNT}:container-instance/your-ecs-cluster-name/0123"
        other_instance = f"arn:aws:ecs:us-east-1:{ACCOUNT}:container-instance/production/0123"
        self.assertTrue(allows(documents, "ecs:RegisterContainerInstance", CLUSTER_ARN))
        self.assertFalse(allows(documents, "ecs:RegisterContainerInstance", other_cluster))
        self.assertFalse(allows(documents, "ecs:SubmitTaskStateChange", other_cluster))
        self.assertTrue(allows(documents, "ecs:Poll", instance_arn, own))
        self.assertFalse(allows(documents, "ecs:Poll", other_instance, {"ecs:cluster": other_cluster}))
        self.assertFalse(allows(documents, "ecs:Poll", instance_arn, {"ecs:cluster": other_cluster}))
        # Only the action AWS authorizes on no resource has "*".
        for statement in documents["data.aws_iam_policy_document.docker_instance[0]"]["statement"]:
            if "*" in statement["resources"]:
                self.assertEqual(statement["actions"], ["ecs:DiscoverPollEndpoint"])
        # No image pulls, logs, parameters, task roles or run/stop of tasks through the instance.
        for action, resource in (
            ("ecr:GetAuthorizationToken", "*"),
            ("logs:PutLogEvents", "*"),
            ("ssm:GetParameter", f"{PARAM_ARN}/pat"),
            ("ecs:RunTask", "*"),
            ("ecs:StopTask", "*"),
            ("iam:PassRole", "*"),
            ("ecs:CreateCluster", "*"),
        ):
            self.assertFalse(allows(documents, action, resource, own), action)

    def test_no_wildcard_action_anywhere_with_every_feature(self):
        everything = {**SHAPED_ORG, "enable_execute_command": True}
        for address, doc in all_policy_documents(plan(everything)).items():
            for statement in doc.get("statement", []):
                for action in statement["actions"]:
                    self.assertRegex(action, r"^[a-z0-9-]+:[A-Za-z]+$", address)


################################################################################
# Task roles per pool
################################################################################


class PoolRoles(unittest.TestCase):
    def test_each_pool_takes_only_its_own_jit_folder(self):
        for variables in (SHAPED_ORG, SHAPED_TWO):
            p = plan(variables)
            pools = {key: runner["pool_name"] for key, runner in p.local("runners").items()}
            self.assertEqual(len(set(pools.values())), len(pools))
            for key, pool in pools.items():
                with self.subTest(key):
                    documents = role_documents(p, f'aws_iam_role.task["{key}"]')
                    statement = statements(p, f'task_jit["{key}"]')["TakeOneShotJitConfig"]
                    self.assertEqual(statement["resources"], [f"{PARAM_ARN}/jit/{pool}/*"])
                    own = f"{PARAM_ARN}/jit/{pool}/runner-1"
                    self.assertTrue(allows(documents, "ssm:GetParameter", own))
                    self.assertTrue(allows(documents, "kms:Decrypt", SSM_MANAGED_KEY, ssm_decrypt_context(own)))
                    for other in set(pools.values()) - {pool}:
                        theirs = f"{PARAM_ARN}/jit/{other}/runner-1"
                        self.assertFalse(allows(documents, "ssm:GetParameter", theirs), f"{key} on {theirs}")
                        self.assertFalse(allows(documents, "kms:Decrypt", SSM_MANAGED_KEY, ssm_decrypt_context(theirs)))
                    td = instance(p, f'aws_ecs_task_definition.github_runner["{key}"]').evaluate()
                    self.assertEqual(td["task_role_arn"], Unknown(f'aws_iam_role.task["{key}"].arn'))
            self.assertEqual(
                p.output("jit_parameter_prefixes"), {key: f"{PREFIX}/jit/{pool}" for key, pool in pools.items()}
            )

    def test_controller_runs_and_passes_every_pool(self):
        p = plan(SHAPED_ORG)
        controller = statements(p, "controller_task[0]")
        families = {f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/github-runner-org-{key}:*" for key in pool_keys(SHAPED_ORG)}
        self.assertEqual(set(controller["RunRunnerTasks"]["resources"]), families)
        passed = set(controller["PassRunnerRoles"]["resources"])
        self.assertEqual(passed, {"${aws_iam_role.execution.arn}"} | {f'${{aws_iam_role.task["{k}"].arn}}' for k in pool_keys(SHAPED_ORG)})
        # The instance role is never handed out by the controller.
        self.assertFalse({r for r in passed if "docker_instance" in r})


################################################################################
# The generated pool file
################################################################################


class PoolFile(unittest.TestCase):
    def pools(self, variables: dict) -> dict:
        return {pool["name"]: pool for pool in pool_file(plan(variables))["pool"]}

    def assert_controller_accepts(self, pool: dict):
        """config.rs's rules for the new keys: launch_type and capacity_providers exclusive, a
        Docker pool never Fargate only, the shape's values in range."""
        ecs = pool["ecs"]
        self.assertEqual(("launch_type" in ecs) + ("capacity_providers" in ecs), 1, "exactly one of launch_type, capacity_providers")
        self.assertNotIn("capacity_provider", ecs)
        providers = ecs.get("capacity_providers", [])
        self.assertEqual(len(providers), len(set(providers)))
        if pool.get("docker"):
            self.assertTrue(providers and not all(p in ("FARGATE", "FARGATE_SPOT") for p in providers))
        if "ephemeral_storage_gib" in ecs:
            self.assertTrue(21 <= ecs["ephemeral_storage_gib"] <= 200)
        if "cpu_architecture" in ecs:
            self.assertIn(ecs["cpu_architecture"], ("X86_64", "ARM64"))
        self.assertLessEqual(pool["min_idle"], pool["max"])

    def test_shape_pools(self):
        from test_controller import ControllerPoolFile

        checker = ControllerPoolFile()
        for variables in (SHAPED_ORG, SHAPED_TWO):
            # The controller's own checks (config.rs, as test_controller.py mirrors them).
            checker.assert_controller_accepts(pool_file(plan(variables)))
            pools = self.pools(variables)
            for key in pool_keys(variables):
                with self.subTest(key):
                    pool = pools[key]
                    self.assert_controller_accepts(pool)
                    ecs = pool["ecs"]
                    self.assertEqual(ecs["task_definition"], f"github-runner-{variables['runner_type']}-{key}")
                    self.assertEqual(ecs["container_name"], ecs["task_definition"])
                    base = key if key in expected_keys(variables) else key.rsplit("-", 1)[0]
                    if variables["runner_type"] == "org":
                        self.assertEqual(pool["organization"], "your-organization")
                    else:
                        self.assertEqual(pool["repository"], f"your-organization/{base}")
                    shape = SHAPES.get(key.rsplit("-", 1)[1]) if key not in expected_keys(variables) else None
                    if shape is None:
                        self.assertNotIn("cpu", ecs)
                        self.assertEqual(ecs["launch_type"], "FARGATE")
                        continue
                    self.assertEqual((ecs["cpu"], ecs["memory"]), (shape["cpu"], shape["memory"]))
                    self.assertEqual(ecs["cpu_architecture"], shape.get("cpu_architecture", "X86_64"))
                    self.assertEqual(ecs.get("ephemeral_storage_gib"), shape.get("ephemeral_storage_gib"))
                    self.assertEqual(pool["labels"], shape.get("labels", ["your-runner-label"]))
                    self.assertEqual((pool["min_idle"], pool["max"]), (shape.get("min_idle", 0), shape.get("max", 10)))
                    if shape.get("docker"):
                        self.assertIs(pool["docker"], True)
                        self.assertEqual(ecs["capacity_providers"], [PROVIDER])
                    else:
                        self.assertNotIn("docker", pool)
                        if shape.get("capacity_providers"):
                            self.assertEqual(ecs["capacity_providers"], shape["capacity_providers"])
                        else:
                            self.assertEqual(ecs["launch_type"], "FARGATE")

    def test_exact_lines_of_a_docker_and_a_spot_pool(self):
        text = instance(plan(SHAPED_ORG), "aws_ssm_parameter.controller_config[0]").evaluate()["value"]
        subnets = '["subnet-00000000000000001","subnet-00000000000000002","subnet-00000000000000003"]'
        docker = f"""
[[pool]]
name = "org-docker"
organization = "your-organization"
labels = ["docker"]
docker = true
min_idle = 1
max = 4

[pool.ecs]
cluster = "your-ecs-cluster-name"
task_definition = "github-runner-org-org-docker"
container_name = "github-runner-org-org-docker"
subnets = {subnets}
security_groups = ["sg-00000000000000001"]
assign_public_ip = false
capacity_providers = ["{PROVIDER}"]
cpu = 2048
memory = 7168
cpu_architecture = "X86_64"
parameter_prefix = "{PREFIX}/jit"
"""
        spot = f"""
[[pool]]
name = "org-large"
organization = "your-organization"
labels = ["your-runner-label"]
min_idle = 0
max = 10

[pool.ecs]
cluster = "your-ecs-cluster-name"
task_definition = "github-runner-org-org-large"
container_name = "github-runner-org-org-large"
subnets = {subnets}
security_groups = ["sg-00000000000000001"]
assign_public_ip = false
capacity_providers = ["FARGATE_SPOT","FARGATE"]
cpu = 4096
memory = 16384
cpu_architecture = "X86_64"
ephemeral_storage_gib = 100
parameter_prefix = "{PREFIX}/jit"
"""
        self.assertIn(docker, text)
        self.assertIn(spot, text)

    def test_the_golden_pool_file_is_what_the_module_writes(self):
        """tests/golden/pool-file-shaped-org.toml is the whole file for SHAPED_ORG. The Rust
        controller parses the same file in its own tests (controller::config), so the module and
        the controller agree on every key. HANGAR_UPDATE_GOLDEN=1 rewrites it."""
        text = instance(plan(SHAPED_ORG), "aws_ssm_parameter.controller_config[0]").evaluate()["value"]
        golden = Path(__file__).resolve().parent / "golden" / "pool-file-shaped-org.toml"
        if os.environ.get("HANGAR_UPDATE_GOLDEN") == "1":
            golden.write_text(text)
        self.assertEqual(golden.read_text(), text, "the generated pool file changed: check the controller parses it, then rerun with HANGAR_UPDATE_GOLDEN=1")

    def test_runner_group_and_kms_key_on_every_pool(self):
        pools = self.pools({**SHAPED_ORG, "runner_group": "ci", "kms_key_arn": EBS_KEY})
        for name, pool in pools.items():
            self.assertEqual(pool["runner_group"], "ci", name)
            self.assertEqual(pool["ecs"]["kms_key_id"], EBS_KEY, name)


class CheckovCoversTheShapes(unittest.TestCase):
    def test_checkov_tfvars_plan_every_new_resource(self):
        # checkov's second run (scripts/lint-terraform) must see the shapes and the Docker capacity.
        import hcl2

        from hcl_eval import Evaluator, _parse_body, _trees

        text = (Path(__file__).resolve().parent / "checkov-all-features.tfvars").read_text()
        attrs, _ = _parse_body(_trees(hcl2.parses_to_tree(text))[0], "checkov-all-features.tfvars")
        literal = Evaluator(Plan(MODULE, ORG, STUBS))
        p = plan({name: literal.eval(expr) for name, expr in attrs.items()})
        self.assertLessEqual(DOCKER_ADDRESSES, resource_addresses(p))
        self.assertEqual(sorted(p.local("runners")), ["org", "org-arm64", "org-docker", "org-large"])
        self.assertEqual(preconditions_of(p, "aws_ecs_task_definition", "github_runner"), [])
        self.assertEqual(preconditions_failing(p), [])


################################################################################
# Validations and preconditions
################################################################################


class Refusals(unittest.TestCase):
    def shape_errors(self, shape: dict, name: str = "x") -> list:
        return Plan(MODULE, {**ORG, "enable_controller": True, "pool_shapes": {name: shape}}, STUBS).validation_errors()

    def test_bad_shapes_are_refused(self):
        fargate = {"cpu": 1024, "memory": 2048}
        docker = {"cpu": 2048, "memory": 4096, "docker": True}
        bad = {
            "cpu_architecture must be X86_64 or ARM64": [{**fargate, "cpu_architecture": "amd64"}, {**docker, "cpu_architecture": "arm64"}],
            "ephemeral_storage_gib must be null or a whole number of GiB from 21 to 200": [
                {**fargate, "ephemeral_storage_gib": 20},
                {**fargate, "ephemeral_storage_gib": 201},
                {**fargate, "ephemeral_storage_gib": 50.5},
                {**docker, "ephemeral_storage_gib": 50},
            ],
            "a Fargate shape's cpu must be a Fargate CPU size": [
                {"cpu": 3000, "memory": 4096},
                {"cpu": 1024, "memory": 256},
                {"cpu": 1024, "memory": 200000},
                {**docker, "cpu": 100},
            ],
            "capacity_providers lists FARGATE and/or FARGATE_SPOT": [
                {**fargate, "capacity_providers": ["EC2"]},
                {**fargate, "capacity_providers": ["FARGATE", "FARGATE"]},
                {**fargate, "capacity_providers": ["fargate"]},
                {**docker, "capacity_providers": ["FARGATE"]},
            ],
            "labels (null for runner_labels)": [{**fargate, "labels": ["has space"]}, {**fargate, "labels": ["a,b"]}],
            "min_idle must be null or a whole number from 0 to 1000": [{**fargate, "min_idle": -1}, {**fargate, "max": 0}, {**fargate, "max": 1.5}],
        }
        for message, shapes in bad.items():
            for shape in shapes:
                with self.subTest(shape):
                    errors = self.shape_errors(shape)
                    self.assertTrue(any(e.startswith("pool_shapes: pool_shapes: ") and message in e for e in errors), errors)
        for name in ("Large", "-x", "x-", "x" * 17, "a_b", ""):
            with self.subTest(name=name):
                errors = self.shape_errors(fargate, name)
                self.assertTrue(any("each shape name" in e for e in errors), errors)
        self.assertTrue(Plan(MODULE, {**ORG, "pool_shapes": None}, STUBS).validation_errors())

    def test_good_shapes_are_accepted(self):
        for shape in (
            {"cpu": 256, "memory": 512},
            {"cpu": 16384, "memory": 122880, "ephemeral_storage_gib": 200, "capacity_providers": ["FARGATE"]},
            {"cpu": 1024, "memory": 2048, "ephemeral_storage_gib": 21, "capacity_providers": ["FARGATE_SPOT"], "labels": ["gpu", "big"], "min_idle": 0, "max": 1000},
            {"cpu": 4096, "memory": 15360, "docker": True, "cpu_architecture": "ARM64"},
        ):
            with self.subTest(shape):
                self.assertEqual(self.shape_errors(shape, "a-1"), [])

    def test_bad_docker_capacity_is_refused(self):
        for value in (
            {"instance_type": "large"},
            {"instance_type": "m7i.large", "cpu_architecture": "amd64"},
            {"instance_type": "m7i.large", "min_size": 3, "max_size": 2},
            {"instance_type": "m7i.large", "max_size": 0},
            {"instance_type": "m7i.large", "target_capacity": 0},
            {"instance_type": "m7i.large", "ami_id": "ami-xyz"},
            {"instance_type": "m7i.large", "root_volume_size_gib": 20},
            {"instance_type": "m7i.large", "root_volume_kms_key_arn": "alias/aws/ebs"},
        ):
            with self.subTest(value):
                errors = Plan(MODULE, {**ORG, "docker_capacity": value}, STUBS).validation_errors()
                self.assertTrue(any(e.startswith("docker_capacity: docker_capacity") for e in errors), errors)
        self.assertEqual(Plan(MODULE, {**ORG, "docker_capacity": {"instance_type": "c7g.xlarge", "cpu_architecture": "ARM64"}}, STUBS).validation_errors(), [])
        errors = Plan(MODULE, {**ORG, "docker_daemon_image": "has space"}, STUBS).validation_errors()
        self.assertTrue(any(e.startswith("docker_daemon_image:") for e in errors))

    def test_a_docker_shape_needs_the_docker_capacity(self):
        errors = failing({**SHAPED_ORG, "docker_capacity": None})
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("the Docker shape of pool org-docker needs docker_capacity", errors[0])
        self.assertEqual(failing(FARGATE_ONLY), [])

    def test_a_docker_shape_matches_the_instances_architecture(self):
        errors = failing({**SHAPED_ORG, "docker_capacity": {"instance_type": "m7g.large", "cpu_architecture": "ARM64"}})
        self.assertEqual(errors, ["pool_shapes: the Docker shape of pool org-docker is X86_64, but docker_capacity's instances are ARM64: give the shape the instances' cpu_architecture."])

    def test_fargate_spot_is_refused_for_an_arm64_shape(self):
        # Fargate Spot runs Linux X86_64 tasks only (ECS developer guide, Fargate capacity
        # providers): the architecture may come from the shape or from var.cpu_architecture.
        spot = {"cpu": 1024, "memory": 2048, "capacity_providers": ["FARGATE_SPOT", "FARGATE"]}
        for variables in (
            {**FARGATE_ONLY, "pool_shapes": {"spot": {**spot, "cpu_architecture": "ARM64"}}},
            {**FARGATE_ONLY, "cpu_architecture": "ARM64", "pool_shapes": {"spot": spot}},
        ):
            errors = failing(variables)
            self.assertEqual(len(errors), 1, errors)
            self.assertIn("is ARM64 and lists FARGATE_SPOT", errors[0])
        self.assertEqual(failing({**FARGATE_ONLY, "pool_shapes": {"spot": spot}}), [])

    def test_shapes_need_the_controller(self):
        errors = failing({**FARGATE_ONLY, "enable_controller": False})
        self.assertEqual(len(errors), 2, errors)
        self.assertTrue(all("needs enable_controller = true" in e for e in errors))
        # Not even a service is planned for a shape without the controller.
        addresses = resource_addresses(plan({**FARGATE_ONLY, "enable_controller": False}))
        self.assertEqual({a for a in addresses if a.startswith("aws_ecs_service.")}, {'aws_ecs_service.github_runner["org"]'})

    def test_min_idle_above_max(self):
        errors = failing({**FARGATE_ONLY, "pool_shapes": {"big": {"cpu": 1024, "memory": 2048, "min_idle": 11}}})
        self.assertEqual(errors, ["pool_shapes: the pool org-big has min_idle 11 above max 10."])

    def test_pool_names_too_long_or_shared(self):
        long_repo = {"runner_type": "standalone", "enable_controller": True, "github_repository_name": ["r" * 20],
                     "pool_shapes": {"x" * 16: {"cpu": 1024, "memory": 2048}}}
        errors = failing(long_repo)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(f"too long: {'r' * 20}-{'x' * 16}", errors[0])
        # A repository whose name is another's shape pool: Terraform's duplicate key error.
        clash = {"runner_type": "standalone", "enable_controller": True, "github_repository_name": ["a", "a-large"],
                 "pool_shapes": {"large": {"cpu": 1024, "memory": 2048}}}
        with self.assertRaisesRegex(EvalError, "duplicate key 'a-large'"):
            plan(clash).local("runners")
        # Two repositories whose pool names collide only once lowercased: refused by the precondition.
        shared = {"runner_type": "standalone", "enable_controller": True, "github_repository_name": ["A.b", "a-b-large"],
                  "pool_shapes": {"large": {"cpu": 1024, "memory": 2048}}}
        self.assertTrue(any("give the same pool name" in e for e in failing(shared)))


if __name__ == "__main__":
    unittest.main()
