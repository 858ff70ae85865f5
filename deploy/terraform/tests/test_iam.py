"""IAM: the execution and task roles and their policies, pulling the image (ECR or a private
registry's credentials), and one task role per runner key, each taking only its own pool's
one-shot JIT parameters.

Shared fixtures and helpers: module_plan.py.
"""

from __future__ import annotations

import re
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import Plan, Unknown  # noqa: E402
from module_plan import (  # noqa: E402
    ACCOUNT,
    CONTROLLER_MODES,
    CREDENTIAL_SECRETS,
    DEFAULT_IMAGE,
    DEFAULT_REPOSITORY,
    MODES,
    MODULE,
    MODULE_DIR,
    ORG,
    PARAM_ARN,
    PREFIX,
    REGISTRY_SECRET,
    SSM_MANAGED_KEY,
    STANDALONE,
    TWO_REPOS,
    all_policy_documents,
    allows,
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
    ssm_decrypt_context,
    statements,
)


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



def jit_preconditions_failing(p: Plan) -> list:
    """The error messages of the failing preconditions of every aws_iam_role_policy.task_jit instance."""
    return preconditions_of(p, "aws_iam_role_policy", "task_jit")



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


if __name__ == "__main__":
    unittest.main()
