"""hangar controller (enable_controller): its generated pool file, checked against the
controller's own validation rules, its service and task definition, and its IAM roles.

Shared fixtures and helpers: module_plan.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import Plan, Unknown  # noqa: E402
from module_plan import (  # noqa: E402
    ACCOUNT,
    CONTROLLER_MODES,
    CREDENTIAL_NAMES,
    CREDENTIAL_SECRETS,
    MODES,
    MODULE,
    ORG,
    PARAM_ARN,
    PREFIX,
    SSM_MANAGED_KEY,
    STUBS,
    TWO_REPOS,
    VPC_ID,
    container,
    controller_container,
    expected_keys,
    instance,
    plan,
    pool_file,
    preconditions_failing,
    preconditions_of,
    resource_addresses,
    role_documents,
    statements,
)


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
POOL_FIELDS = {"name", "repository", "organization", "scale_set", "labels", "runner_group", "docker", "ecs", "local"} | LIMIT_FIELDS
ECS_FIELDS = {
    "cluster", "task_definition", "container_name", "subnets", "security_groups", "assign_public_ip",
    "launch_type", "capacity_provider", "capacity_providers", "cpu", "memory", "cpu_architecture",
    "ephemeral_storage_gib", "parameter_prefix", "kms_key_id",
}
CONTROLLER_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"



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
                # launch_type or an ordered list of capacity providers (pool_shapes), not both.
                self.assertEqual(("launch_type" in ecs) + ("capacity_providers" in ecs), 1)
                if "launch_type" in ecs:
                    self.assertIn(ecs["launch_type"], ("FARGATE", "EC2", "EXTERNAL"))
                else:
                    providers = ecs["capacity_providers"]
                    self.assertTrue(providers and len(providers) == len(set(providers)))
                    self.assertTrue(all(p.strip() == p and p for p in providers))
                if pool.get("docker"):
                    fargate_only = all(p in ("FARGATE", "FARGATE_SPOT") for p in ecs.get("capacity_providers", [])) and ecs.get("launch_type", "FARGATE") == "FARGATE"
                    self.assertFalse(fargate_only, "a Docker pool cannot run on Fargate")
                if "ephemeral_storage_gib" in ecs:
                    self.assertTrue(21 <= ecs["ephemeral_storage_gib"] <= 200)
                if "cpu_architecture" in ecs:
                    self.assertIn(ecs["cpu_architecture"], ("X86_64", "ARM64"))
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
                # Its own group only, never the runners' (ControllerSecurityGroup).
                self.assertEqual(network["security_groups"], [Unknown("aws_security_group.controller[0].id")])

    def test_log_group_and_outputs(self):
        key = CONTROLLER_KEY
        p = plan({**ORG, "enable_controller": True, "log_retention_in_days": 365, "cloudwatch_log_group_kms_key_id": key})
        group = instance(p, "aws_cloudwatch_log_group.controller[0]").evaluate()
        self.assertEqual((group["name"], group["retention_in_days"], group["kms_key_id"]), ("awslogs-hangar-controller", 365, key))
        self.assertEqual(p.output("controller_service_name"), "hangar-controller")
        self.assertEqual(p.output("controller_config_parameter_name"), f"{PREFIX}/controller/config")
        self.assertEqual(p.output("controller_log_group_name"), "awslogs-hangar-controller")


class ControllerSecurityGroup(unittest.TestCase):
    """The controller's HTTP surface (every pool's jobs) is closed to the jobs: its service runs in a
    security group of its own, which admits the controller port from the listed sources only."""

    MONITORING = ["sg-0aaaaaaaaaaaaaaa1", "sg-0bbbbbbbbbbbbbbb2"]
    NETWORKS = ["10.20.0.0/24", "192.168.7.0/28"]

    def ingress_rules(self, p: Plan) -> dict:
        return {
            address: inst.evaluate()
            for address, inst in p.all_instances("resource").items()
            if address.startswith("aws_vpc_security_group_ingress_rule.")
        }

    def test_the_service_runs_in_its_own_group_only(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan({**variables, "controller_ingress_security_group_ids": self.MONITORING})
                (network,) = instance(p, "aws_ecs_service.controller[0]").evaluate()["network_configuration"]
                self.assertEqual(network["security_groups"], [Unknown("aws_security_group.controller[0].id")])
                for group in p.var_values["security_group_ids"]:
                    self.assertNotIn(group, network["security_groups"])
                group = instance(p, "aws_security_group.controller[0]").evaluate()
                self.assertEqual(group["vpc_id"], VPC_ID)
                self.assertEqual(group["name_prefix"], "hangar-controller-")
                self.assertTrue(group["description"])
                # AWS accepts only these characters in group and rule descriptions.
                self.assertRegex(group["description"], r"^[A-Za-z0-9. _\-:/()#,@\[\]+=;{}!$*]{1,255}$")
                self.assertEqual(p.output("controller_security_group_id"), Unknown("aws_security_group.controller[0].id"))
                # The first private subnet tells the VPC.
                subnet = instance(p, "data.aws_subnet.controller[0]").evaluate()
                self.assertEqual(subnet["id"], p.var_values["private_subnet_ids"][0])

    def test_no_ingress_by_default_and_egress_to_anywhere(self):
        for label, variables in CONTROLLER_MODES.items():
            with self.subTest(label):
                p = plan(variables)
                self.assertEqual(self.ingress_rules(p), {})
                group = instance(p, "aws_security_group.controller[0]").evaluate()
                self.assertNotIn("ingress", group, "no inline rule: the rules are resources of their own")
                egress = instance(p, "aws_vpc_security_group_egress_rule.controller[0]").evaluate()
                self.assertEqual(egress["security_group_id"], Unknown("aws_security_group.controller[0].id"))
                self.assertEqual((egress["ip_protocol"], egress["cidr_ipv4"]), ("-1", "0.0.0.0/0"))
                self.assertRegex(egress["description"], r"^[A-Za-z0-9. _\-:/()#,@\[\]+=;{}!$*]{1,255}$")
                self.assertEqual(preconditions_of(p, "aws_security_group", "controller"), [])

    def test_ingress_is_the_controller_port_from_the_listed_sources_only(self):
        p = plan({
            **ORG,
            "enable_controller": True,
            # A source listed twice gets one rule.
            "controller_ingress_security_group_ids": [*self.MONITORING, self.MONITORING[0]],
            "controller_ingress_cidr_blocks": self.NETWORKS,
        })
        rules = self.ingress_rules(p)
        self.assertEqual(
            set(rules),
            {f'aws_vpc_security_group_ingress_rule.controller_from_security_group["{g}"]' for g in self.MONITORING}
            | {f'aws_vpc_security_group_ingress_rule.controller_from_cidr["{c}"]' for c in self.NETWORKS},
        )
        sources = set()
        for address, rule in rules.items():
            with self.subTest(address):
                self.assertEqual(rule["security_group_id"], Unknown("aws_security_group.controller[0].id"))
                self.assertEqual((rule["ip_protocol"], rule["from_port"], rule["to_port"]), ("tcp", 9464, 9464))
                self.assertRegex(rule["description"], r"^[A-Za-z0-9. _\-:/()#,@\[\]+=;{}!$*]{1,255}$")
                source = {k: rule[k] for k in ("referenced_security_group_id", "cidr_ipv4") if k in rule}
                self.assertEqual(len(source), 1, rule)
                sources |= set(source.values())
        self.assertEqual(sources, set(self.MONITORING) | set(self.NETWORKS))
        # The same port the controller listens on, in its pool file and container.
        self.assertEqual(pool_file(p)["controller"]["listen"], "0.0.0.0:9464")
        self.assertEqual(controller_container(p)["portMappings"], [{"containerPort": 9464, "protocol": "tcp"}])

    def test_runners_keep_security_group_ids(self):
        groups = ["sg-0123456789abcdef0", "sg-0fedcba9876543210"]
        shapes = {"large": {"cpu": 4096, "memory": 8192}, "docker": {"cpu": 2048, "memory": 7168, "docker": True}}
        for label, variables in {
            "fixed services": {**TWO_REPOS, "security_group_ids": groups},
            "controller": {
                **ORG,
                "enable_controller": True,
                "security_group_ids": groups,
                "controller_ingress_security_group_ids": self.MONITORING,
                "pool_shapes": shapes,
                "docker_capacity": {"instance_type": "m7i.large"},
            },
        }.items():
            with self.subTest(label):
                p = plan(variables)
                for address, inst in p.all_instances("resource").items():
                    if address.startswith("aws_ecs_service.github_runner["):
                        (network,) = inst.evaluate()["network_configuration"]
                        self.assertEqual(network["security_groups"], groups, address)
                if variables.get("enable_controller"):
                    for pool in pool_file(p)["pool"]:
                        self.assertEqual(pool["ecs"]["security_groups"], groups, pool["name"])
                    template = instance(p, "aws_launch_template.docker[0]").evaluate()
                    (interface,) = template["network_interfaces"]
                    self.assertEqual(interface["security_groups"], groups)
                else:
                    self.assertEqual(len([a for a in resource_addresses(p) if a.startswith("aws_ecs_service.github_runner[")]), 2)

    def test_without_the_controller_no_group_is_made(self):
        for label, variables in MODES.items():
            with self.subTest(label):
                # The ingress lists are ignored without the controller, like its other inputs.
                p = plan({**variables, "controller_ingress_security_group_ids": self.MONITORING, "controller_ingress_cidr_blocks": self.NETWORKS})
                addresses = resource_addresses(p)
                self.assertFalse({a for a in addresses if "security_group" in a}, addresses)
                self.assertNotIn("data.aws_subnet.controller[0]", p.all_instances("data"))
                self.assertIsNone(p.output("controller_security_group_id"))

    def test_the_runners_groups_are_refused_as_a_source(self):
        p = plan({**ORG, "enable_controller": True, "controller_ingress_security_group_ids": ["sg-0aaaaaaaaaaaaaaa1", "sg-00000000000000001"]})
        (failing,) = preconditions_of(p, "aws_security_group", "controller")
        self.assertIn("controller_ingress_security_group_ids lists a group of security_group_ids (sg-00000000000000001)", failing)

    def test_bad_ingress_values_are_rejected(self):
        for name, value in (
            ("controller_ingress_security_group_ids", ["sg-XYZ"]),
            ("controller_ingress_security_group_ids", ["vpc-0123456789abcdef0"]),
            ("controller_ingress_security_group_ids", None),
            ("controller_ingress_cidr_blocks", ["10.20.0.0"]),
            ("controller_ingress_cidr_blocks", ["10.20.0.5/24"]),
            ("controller_ingress_cidr_blocks", ["10.20.0.0/33"]),
            ("controller_ingress_cidr_blocks", ["300.1.2.0/24"]),
            ("controller_ingress_cidr_blocks", ["10.20.0.0/255.255.255.0"]),
            ("controller_ingress_cidr_blocks", ["fd00::/64"]),
            ("controller_ingress_cidr_blocks", None),
        ):
            with self.subTest(f"{name}={value}"):
                errors = Plan(MODULE, {**ORG, "enable_controller": True, name: value}, STUBS).validation_errors()
                self.assertEqual(len(errors), 1, errors)
                self.assertTrue(errors[0].startswith(f"{name}: "), errors)
        for value in (["0.0.0.0/0"], ["10.0.0.0/8", "192.168.1.128/25"], ["172.16.5.4/32"]):
            with self.subTest(value):
                plan({**ORG, "enable_controller": True, "controller_ingress_cidr_blocks": value})


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


if __name__ == "__main__":
    unittest.main()
