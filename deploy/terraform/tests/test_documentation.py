"""The module's documentation and lint settings: every checkov skip has a reason, the checkov
tfvars are a valid deployment, and the README lists every input and output.

Shared fixtures and helpers: module_plan.py.
"""

from __future__ import annotations

import re
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hcl_eval import Evaluator, Plan  # noqa: E402
from module_plan import (  # noqa: E402
    MODULE,
    MODULE_DIR,
    STANDALONE,
    STUBS,
    plan,
    preconditions_of,
    resource_addresses,
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


if __name__ == "__main__":
    unittest.main()
