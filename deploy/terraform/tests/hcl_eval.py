"""A small evaluator of Terraform expressions, enough to plan this module offline.

python-hcl2 parses every .tf file into a Lark tree (`hcl2.parses_to_tree`); this file evaluates
those trees as Terraform would for the parts this module uses: literals and string templates,
`var.`, `local.`, `each.`, `count.`, `data.` and resource references, conditionals, operators,
`for` expressions, splats, `dynamic` blocks (for_each and one content block) and a handful of
functions. Resources with `for_each` or `count` are expanded into instances with Terraform's
addresses (`aws_ecs_service.github_runner["org"]`). Variable values are converted to their `type`
as Terraform converts inputs: objects keep their declared attributes, and an absent or null
`optional(T, default)` attribute takes its default (`pool_shapes`, `docker_capacity`).

What only AWS knows at apply time (ARNs, ids) stays symbolic: an `Unknown` that renders as
`${aws_iam_role.execution.arn}` inside strings. Data sources answer from a table of stubs given by
the test (the account id, the partition, ...), standing in for what a plan would read.

Anything outside that subset (another function, a template directive, a heredoc) raises
`Unsupported`, so a change to the module that the mirror cannot follow fails the test instead of
being evaluated wrongly.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import hcl2
from lark import Token, Tree


class EvalError(Exception):
    """What Terraform would report as an error (a failed validation, an invalid index, ...)."""


class Unsupported(Exception):
    """HCL this mirror does not evaluate; the module should stay within the supported subset."""


################################################################################
# Values
################################################################################


@dataclass(frozen=True)
class Unknown:
    """A value known only after apply, kept as the reference that produces it."""

    ref: str

    def __str__(self) -> str:
        return "${" + self.ref + "}"


def _fmt_number(n) -> str:
    if isinstance(n, float) and n.is_integer():
        n = int(n)
    return str(n)


def to_template_string(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _fmt_number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Unknown):
        return str(value)
    if value is None:
        raise EvalError("a null value cannot be used in a string template")
    raise EvalError(f"cannot use {type(value).__name__} in a string template")


def to_plain(value):
    """A JSON-ready copy: Unknowns become their ${ref} text, objects sorted as jsonencode does."""
    if isinstance(value, Unknown):
        return str(value)
    if isinstance(value, dict):
        return {k: to_plain(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (Instance, ResourceRef)):
        raise EvalError(f"cannot use a whole resource ({value}) as a value")
    return value


################################################################################
# Type constraints of variables: the value converted as Terraform converts an input
################################################################################


def convert(value, type_node, ev: "Evaluator", what: str):
    """`value` converted to the type constraint `type_node` (a variable's `type`): objects keep
    their declared attributes only, and an absent or null `optional(T, default)` attribute takes
    its default (null without one), as Terraform does. Primitives are checked, not converted."""
    if value is None or isinstance(value, Unknown):
        return value
    inner = _trees(type_node)
    if type_node.data == "expr_term" and len(inner) == 1:
        return convert(value, inner[0], ev, what)
    if type_node.data == "identifier":
        name = _name_of(type_node)
        checks = {
            "any": lambda v: True,
            "string": lambda v: isinstance(v, str),
            "bool": lambda v: isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        }
        if name not in checks:
            raise Unsupported(f"type {name}")
        if not checks[name](value):
            raise EvalError(f"{what}: {value!r} is not a {name}")
        return value
    if type_node.data != "function_call":
        raise Unsupported(f"type expression {type_node.data}")
    name = _name_of(inner[0])
    args = _trees(inner[1]) if len(inner) > 1 else []
    if name in ("list", "set"):
        return [convert(v, args[0], ev, f"{what}[{i}]") for i, v in enumerate(_need(value, list, what))]
    if name == "map":
        return {k: convert(v, args[0], ev, f"{what}[{k!r}]") for k, v in _need(value, dict, what).items()}
    if name == "object":
        value = _need(value, dict, what)
        (attributes,) = [_trees(a)[0] if a.data == "expr_term" else a for a in args]
        out = {}
        for elem in _trees(attributes):
            key_node, attr_type = _trees(elem)
            attr = _name_of(_trees(key_node)[0])
            attr_type = _trees(attr_type)[0] if attr_type.data == "expr_term" else attr_type
            optional = attr_type.data == "function_call" and _name_of(_trees(attr_type)[0]) == "optional"
            if optional:
                opt_args = _trees(_trees(attr_type)[1])
                attr_type = opt_args[0]
                given = value.get(attr)
                if given is None:
                    given = ev.eval(opt_args[1]) if len(opt_args) > 1 else None
                out[attr] = convert(given, attr_type, ev, f"{what}.{attr}")
            elif attr not in value:
                raise EvalError(f"{what}: attribute {attr!r} is required")
            else:
                out[attr] = convert(value[attr], attr_type, ev, f"{what}.{attr}")
        return out
    raise Unsupported(f"type {name}()")


################################################################################
# The module: blocks of every .tf file
################################################################################


@dataclass
class Block:
    type: str
    labels: list
    attrs: dict = field(default_factory=dict)  # name -> expression tree
    blocks: list = field(default_factory=list)  # nested Blocks
    file: str = ""

    def nested(self, block_type: str) -> list:
        return [b for b in self.blocks if b.type == block_type]


def _trees(node) -> list:
    """The meaningful children of a node: subtrees other than newlines and comments."""
    return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]


def _name_of(node) -> str:
    """The text of an identifier, keyword or literal_value node (or a token)."""
    if isinstance(node, Token):
        return str(node)
    if node.data in ("identifier", "keyword", "literal_value"):
        return str(node.children[0])
    if node.data == "expr_term" and len(_trees(node)) == 1:
        return _name_of(_trees(node)[0])
    raise Unsupported(f"expected a name, found {node.data}")


def _literal_string(node) -> str:
    """A block label: a quoted string without interpolation."""
    if node.data == "string":
        return Evaluator.static_string(node)
    return _name_of(node)


def _parse_body(body: Tree, file: str) -> tuple[dict, list]:
    attrs, blocks = {}, []
    for child in _trees(body):
        if child.data == "attribute":
            parts = _trees(child)
            attrs[_name_of(parts[0])] = parts[-1]
        elif child.data == "block":
            parts = _trees(child)
            inner = parts[-1]
            header = [_literal_string(p) for p in parts[:-1]]
            a, b = _parse_body(inner, file)
            blocks.append(Block(type=header[0], labels=header[1:], attrs=a, blocks=b, file=file))
    return attrs, blocks


@dataclass
class Module:
    directory: Path
    blocks: list

    @classmethod
    def load(cls, directory: Path) -> "Module":
        blocks = []
        for path in sorted(directory.glob("*.tf")):
            tree = hcl2.parses_to_tree(path.read_text())
            body = _trees(tree)[0]
            _, top = _parse_body(body, path.name)
            blocks.extend(top)
        return cls(directory=directory, blocks=blocks)

    def of_type(self, block_type: str) -> list:
        return [b for b in self.blocks if b.type == block_type]

    @property
    def variables(self) -> dict:
        return {b.labels[0]: b for b in self.of_type("variable")}

    @property
    def outputs(self) -> dict:
        return {b.labels[0]: b for b in self.of_type("output")}

    @property
    def locals(self) -> dict:
        out = {}
        for b in self.of_type("locals"):
            for name, expr in b.attrs.items():
                if name in out:
                    raise EvalError(f"local.{name} is defined twice")
                out[name] = expr
        return out

    def resources(self, mode: str) -> dict:
        """(type, name) -> Block, for mode "resource" or "data"."""
        return {(b.labels[0], b.labels[1]): b for b in self.of_type(mode)}


################################################################################
# References
################################################################################


class Namespace:
    """`var`, `local`, `data`, a resource type: something only reachable through `.name`."""

    def __init__(self, label: str, getter):
        self.label, self.getter = label, getter

    def attr(self, name: str):
        return self.getter(name)

    def __repr__(self) -> str:
        return self.label


class ResourceRef:
    """A resource or data block: its instances, keyed as Terraform keys them."""

    def __init__(self, plan: "Plan", mode: str, rtype: str, name: str):
        self.plan, self.mode, self.rtype, self.name = plan, mode, rtype, name
        self.block = plan.module.resources(mode)[(rtype, name)]

    @property
    def base_address(self) -> str:
        prefix = "data." if self.mode == "data" else ""
        return f"{prefix}{self.rtype}.{self.name}"

    def repetition(self) -> str | None:
        if "for_each" in self.block.attrs:
            return "for_each"
        if "count" in self.block.attrs:
            return "count"
        return None

    def instances(self) -> dict:
        return self.plan.instances(self)

    def __repr__(self) -> str:
        return self.base_address


class Instance:
    """One resource instance; its arguments are evaluated with its own each/count."""

    def __init__(self, ref: ResourceRef, key):
        self.ref, self.key = ref, key

    @property
    def address(self) -> str:
        if self.key is None:
            return self.ref.base_address
        if isinstance(self.key, int):
            return f"{self.ref.base_address}[{self.key}]"
        return f"{self.ref.base_address}[{json.dumps(self.key)}]"

    def evaluator(self) -> "Evaluator":
        rep = self.ref.repetition()
        each = count = None
        if rep == "for_each":
            collection = self.ref.plan.for_each_collection(self.ref)
            each = {"key": self.key, "value": collection[self.key]}
        elif rep == "count":
            count = {"index": self.key}
        return Evaluator(self.ref.plan, each=each, count=count)

    def attr(self, name: str):
        block = self.ref.block
        if name in block.attrs:
            return self.evaluator().eval(block.attrs[name])
        stub = self.ref.plan.stubs.get((self.ref.mode, self.ref.rtype, self.ref.name), {})
        if name in stub:
            return stub[name]
        return Unknown(f"{self.address}.{name}")

    def evaluate(self) -> dict:
        """Every argument and nested block of this instance, evaluated."""
        return self.evaluator().eval_block(self.ref.block)

    def __repr__(self) -> str:
        return self.address


################################################################################
# Plan: variables, locals and instances for one set of inputs
################################################################################


class Plan:
    def __init__(self, module: Module, variables: dict, stubs: dict | None = None):
        self.module = module
        self.stubs = stubs or {}
        self._locals: dict = {}
        self._evaluating: set = set()
        self._instances: dict = {}
        self.var_values = self._resolve_variables(variables)

    # Variables --------------------------------------------------------------------------------

    def _resolve_variables(self, given: dict) -> dict:
        declared = self.module.variables
        unknown = set(given) - set(declared)
        if unknown:
            raise EvalError(f"undeclared variables: {sorted(unknown)}")
        values = {}
        for name, block in declared.items():
            if name in given:
                value = given[name]
            elif "default" in block.attrs:
                value = Evaluator(self).eval(block.attrs["default"])
            else:
                raise EvalError(f"no value for the required variable {name}")
            if "type" in block.attrs:
                value = convert(value, block.attrs["type"], Evaluator(self), f"var.{name}")
            values[name] = value
        return values

    def validation_errors(self) -> list:
        """The error_message of every failing validation, as `terraform plan` would report them."""
        errors = []
        for name, block in self.module.variables.items():
            for validation in block.nested("validation"):
                ev = Evaluator(self)
                try:
                    ok = ev.eval(validation.attrs["condition"])
                except EvalError as e:
                    raise EvalError(f"validation of {name} could not be evaluated: {e}") from e
                if not isinstance(ok, bool):
                    raise EvalError(f"validation of {name} is not a bool: {ok!r}")
                if not ok:
                    errors.append(f"{name}: {ev.eval(validation.attrs['error_message'])}")
        return errors

    # Locals -----------------------------------------------------------------------------------

    def local(self, name: str):
        if name in self._locals:
            return self._locals[name]
        exprs = self.module.locals
        if name not in exprs:
            raise EvalError(f"local.{name} is not declared")
        if name in self._evaluating:
            raise EvalError(f"local.{name} refers to itself")
        self._evaluating.add(name)
        try:
            value = Evaluator(self).eval(exprs[name])
        finally:
            self._evaluating.discard(name)
        self._locals[name] = value
        return value

    # Resources --------------------------------------------------------------------------------

    def ref(self, mode: str, rtype: str, name: str) -> ResourceRef:
        if (rtype, name) not in self.module.resources(mode):
            raise EvalError(f"{'data.' if mode == 'data' else ''}{rtype}.{name} is not declared")
        return ResourceRef(self, mode, rtype, name)

    def for_each_collection(self, ref: ResourceRef) -> dict:
        value = Evaluator(self).eval(ref.block.attrs["for_each"])
        if isinstance(value, dict):
            return value
        raise EvalError(f"{ref}: for_each must be a map (this mirror has no sets), not {type(value).__name__}")

    def instances(self, ref: ResourceRef) -> dict:
        cache_key = (ref.mode, ref.rtype, ref.name)
        if cache_key not in self._instances:
            rep = ref.repetition()
            if rep == "for_each":
                keys = sorted(self.for_each_collection(ref))
            elif rep == "count":
                n = Evaluator(self).eval(ref.block.attrs["count"])
                if not isinstance(n, (int, float)) or isinstance(n, bool) or n < 0 or n != int(n):
                    raise EvalError(f"{ref}: count must be a whole number, not {n!r}")
                keys = list(range(int(n)))
            else:
                keys = [None]
            self._instances[cache_key] = {k: Instance(ref, k) for k in keys}
        return self._instances[cache_key]

    def all_instances(self, mode: str = "resource") -> dict:
        """address -> Instance, for every resource (or data) instance this plan would have."""
        out = {}
        for (rtype, name) in self.module.resources(mode):
            for inst in self.instances(self.ref(mode, rtype, name)).values():
                out[inst.address] = inst
        return out

    def output(self, name: str):
        return Evaluator(self).eval(self.module.outputs[name].attrs["value"])


################################################################################
# Expressions
################################################################################


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            n = text[i + 1]
            if n in _ESCAPES:
                out.append(_ESCAPES[n])
                i += 2
                continue
            if n == "u":
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            raise Unsupported(f"escape \\{n}")
        out.append(c)
        i += 1
    return "".join(out)


def _need(value, kind: type, what: str):
    """value itself, if it is a known `kind` (bool, str, list or dict); else what Terraform would report."""
    if isinstance(value, Unknown):
        raise EvalError(f"{what} depends on a value known only after apply: {value}")
    if not isinstance(value, kind):
        raise EvalError(f"{what} must be a {kind.__name__}, not {value!r}")
    return value


def _truthy(value, what: str) -> bool:
    return _need(value, bool, what)


class Evaluator:
    def __init__(self, plan: Plan, each=None, count=None, scope=None):
        self.plan, self.each, self.count = plan, each, count
        self.scope = scope or {}

    def child(self, **names) -> "Evaluator":
        return Evaluator(self.plan, self.each, self.count, {**self.scope, **names})

    @staticmethod
    def static_string(node: Tree) -> str:
        parts = []
        for part in _trees(node):
            token = part.children[0]
            if not isinstance(token, Token) or token.type != "STRING_CHARS":
                raise Unsupported("a label with interpolation")
            parts.append(_unescape(str(token)))
        return "".join(parts)

    # Blocks -----------------------------------------------------------------------------------

    def eval_block(self, block: Block) -> dict:
        out = {}
        for name, expr in block.attrs.items():
            if name in ("for_each", "count", "depends_on", "provider"):
                continue
            out[name] = self.eval(expr)
        for nested in block.blocks:
            if nested.type == "dynamic":
                generated = self.eval_dynamic(nested)
                if generated:
                    out.setdefault(nested.labels[0], []).extend(generated)
                continue
            if nested.type == "lifecycle":
                continue
            out.setdefault(nested.type, []).append(self.eval_block(nested))
        return out

    def eval_dynamic(self, dynamic: Block) -> list:
        """A `dynamic "<name>"` block: one `content` block per element of for_each, with the
        iterator (named after the block, or `iterator`) holding .key and .value."""
        if set(dynamic.attrs) - {"for_each", "iterator"} or [b.type for b in dynamic.blocks] != ["content"]:
            raise Unsupported("a dynamic block other than for_each (iterator) and one content block")
        iterator = _name_of(dynamic.attrs["iterator"]) if "iterator" in dynamic.attrs else dynamic.labels[0]
        collection = self.eval(dynamic.attrs["for_each"])
        if isinstance(collection, dict):
            pairs = [(k, collection[k]) for k in sorted(collection)]
        elif isinstance(collection, list):
            pairs = list(enumerate(collection))
        elif collection is None:
            raise EvalError(f"dynamic {dynamic.labels[0]}: for_each is null")
        else:
            raise EvalError(f"dynamic {dynamic.labels[0]}: cannot iterate over {collection!r}")
        return [self.child(**{iterator: {"key": k, "value": v}}).eval_block(dynamic.blocks[0]) for k, v in pairs]

    # Expressions ------------------------------------------------------------------------------

    def eval(self, node):
        if isinstance(node, Token):
            raise Unsupported(f"bare token {node.type}")
        method = getattr(self, "_" + node.data, None)
        if method is None:
            raise Unsupported(f"expression {node.data}")
        return method(node)

    def _expr_term(self, node):
        inner = _trees(node)
        if len(inner) != 1:
            raise Unsupported(f"expr_term with {len(inner)} parts")
        return self.eval(inner[0])

    def _int_lit(self, node):
        return int(str(node.children[0]))

    def _float_lit(self, node):
        return float(str(node.children[0]))

    def _literal_value(self, node):
        return {"true": True, "false": False, "null": None}[str(node.children[0])]

    def _string(self, node):
        parts = []
        for part in _trees(node):
            item = part.children[0]
            if isinstance(item, Token):
                if item.type == "STRING_CHARS":
                    parts.append(("text", _unescape(str(item))))
                elif item.type == "ESCAPED_INTERPOLATION":
                    parts.append(("text", str(item)[1:]))
                else:
                    raise Unsupported(f"string part {item.type}")
            elif item.data == "interpolation":
                parts.append(("value", self.eval(_trees(item)[0])))
            else:
                raise Unsupported(f"template directive {item.data}")
        # "${x}" alone is x itself, with its type.
        if len(parts) == 1 and parts[0][0] == "value":
            return parts[0][1]
        return "".join(v if kind == "text" else to_template_string(v) for kind, v in parts)

    def _heredoc_template(self, node):
        raise Unsupported("heredocs")

    _heredoc_template_trim = _heredoc_template
    _template_string = _heredoc_template

    def _tuple(self, node):
        return [self.eval(c) for c in _trees(node)]

    def _object(self, node):
        out = {}
        for elem in _trees(node):
            key_node, value_node = _trees(elem)
            inner = _trees(key_node)[0]
            if inner.data == "keyword":
                key = _name_of(inner)
            elif inner.data == "expr_term" and len(_trees(inner)) == 1 and _trees(inner)[0].data == "identifier":
                key = _name_of(inner)  # a bare name is the key itself
            else:
                key = self.eval(inner)
                if not isinstance(key, str):
                    raise EvalError(f"object key must be a string, not {key!r}")
            if key in out:
                raise EvalError(f"duplicate object key {key!r}")
            out[key] = self.eval(value_node)
        return out

    def _identifier(self, node):
        name = _name_of(node)
        if name in self.scope:
            return self.scope[name]
        plan = self.plan
        if name == "var":
            def get_var(n):
                if n not in plan.var_values:
                    raise EvalError(f"var.{n} is not declared")
                return plan.var_values[n]
            return Namespace("var", get_var)
        if name == "local":
            return Namespace("local", plan.local)
        if name == "each":
            if self.each is None:
                raise EvalError("each is only valid in a resource with for_each")
            return self.each
        if name == "count":
            if self.count is None:
                raise EvalError("count is only valid in a resource with count")
            return self.count
        if name == "data":
            return Namespace("data", lambda rtype: Namespace(f"data.{rtype}", lambda n: plan.ref("data", rtype, n)))
        if any(rtype == name for (rtype, _) in plan.module.resources("resource")):
            return Namespace(name, lambda n: plan.ref("resource", name, n))
        raise EvalError(f"unknown name {name!r}")

    # Traversals -------------------------------------------------------------------------------

    def get_attr(self, value, name: str):
        if isinstance(value, Namespace):
            return value.attr(name)
        if isinstance(value, ResourceRef):
            if value.repetition() is not None:
                raise EvalError(f"{value} has {value.repetition()}: index it before .{name}")
            return value.instances()[None].attr(name)
        if isinstance(value, Instance):
            return value.attr(name)
        if isinstance(value, Unknown):
            return Unknown(f"{value.ref}.{name}")
        if isinstance(value, dict):
            if name not in value:
                raise EvalError(f"object has no attribute {name!r}")
            return value[name]
        if value is None:
            raise EvalError(f"attempt to get .{name} of null")
        raise EvalError(f"cannot get .{name} of {type(value).__name__}")

    def index(self, value, key):
        if isinstance(key, Unknown):
            raise EvalError(f"index known only after apply: {key}")
        if isinstance(value, ResourceRef):
            instances = value.instances()
            if key not in instances:
                raise EvalError(f"{value}[{key!r}] does not exist (instances: {list(instances)})")
            return instances[key]
        if isinstance(value, Unknown):
            return Unknown(f"{value.ref}[{json.dumps(key)}]")
        if isinstance(value, list):
            if not isinstance(key, (int, float)) or isinstance(key, bool) or not 0 <= key < len(value):
                raise EvalError(f"invalid index {key!r} into a list of {len(value)}")
            return value[int(key)]
        if isinstance(value, dict):
            if key not in value:
                raise EvalError(f"no key {key!r} in {sorted(value)}")
            return value[key]
        raise EvalError(f"cannot index {type(value).__name__}")

    def _apply_step(self, value, step):
        if step.data == "get_attr":
            return self.get_attr(value, _name_of(_trees(step)[0]))
        if step.data == "braces_index":
            return self.index(value, self.eval(_trees(step)[0]))
        if step.data == "short_index":
            return self.index(value, int(str(step.children[1])))
        raise Unsupported(f"traversal {step.data}")

    def _get_attr_expr_term(self, node):
        base, step = _trees(node)
        return self._apply_step(self.eval(base), step)

    _index_expr_term = _get_attr_expr_term

    def _full_splat_expr_term(self, node):
        base, splat = _trees(node)
        value = self.eval(base)
        if isinstance(value, ResourceRef):
            if value.repetition() == "for_each":
                raise EvalError(f"{value}[*]: splat of a for_each resource (use values())")
            items = list(value.instances().values())
        elif value is None:
            items = []
        elif isinstance(value, list):
            items = list(value)
        else:
            items = [value]
        out = []
        for item in items:
            for step in _trees(splat):
                item = self._apply_step(item, step)
            out.append(item)
        return out

    _attr_splat_expr_term = _full_splat_expr_term

    # Operators --------------------------------------------------------------------------------

    def _conditional(self, node):
        cond, yes, no = _trees(node)
        chosen = _truthy(self.eval(cond), "a condition")
        # Terraform reports the errors of the chosen result only: `var.x == null ? null : var.x.a`
        # is fine for a null var.x (checked with `terraform console`, 1.11). `&&` and `||` do not
        # short-circuit (below): a guard against null must be a conditional.
        return self.eval(yes) if chosen else self.eval(no)

    def _binary_op(self, node):
        lhs_node, term = _trees(node)[:2]
        op_node, rhs_node = _trees(term)
        op = str(op_node.children[0])
        lhs, rhs = self.eval(lhs_node), self.eval(rhs_node)
        if op in ("&&", "||"):
            a, b = _truthy(lhs, f"the left of {op}"), _truthy(rhs, f"the right of {op}")
            return (a and b) if op == "&&" else (a or b)
        if isinstance(lhs, Unknown) or isinstance(rhs, Unknown):
            raise EvalError(f"{op} on a value known only after apply")
        if op == "==":
            return _same(lhs, rhs)
        if op == "!=":
            return not _same(lhs, rhs)
        for side in (lhs, rhs):
            if not isinstance(side, (int, float)) or isinstance(side, bool):
                raise EvalError(f"{op} needs numbers, not {side!r}")
        return {
            "<": lambda: lhs < rhs,
            ">": lambda: lhs > rhs,
            "<=": lambda: lhs <= rhs,
            ">=": lambda: lhs >= rhs,
            "+": lambda: lhs + rhs,
            "-": lambda: lhs - rhs,
            "*": lambda: lhs * rhs,
            "/": lambda: lhs / rhs,
            "%": lambda: math.fmod(lhs, rhs),
        }[op]()

    def _unary_op(self, node):
        op = str(node.children[0])
        value = self.eval(_trees(node)[0])
        if op == "!":
            return not _truthy(value, "the operand of !")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise EvalError(f"- needs a number, not {value!r}")
        return -value

    # For expressions --------------------------------------------------------------------------

    def _for_items(self, intro: Tree):
        parts = _trees(intro)
        names = [_name_of(p) for p in parts[:-1]]
        collection = self.eval(parts[-1])
        if isinstance(collection, ResourceRef):
            collection = collection.instances()
            if None in collection:
                raise EvalError("cannot iterate over a single resource instance")
        if isinstance(collection, dict):
            pairs = [(k, collection[k]) for k in sorted(collection)]
        elif isinstance(collection, list):
            pairs = list(enumerate(collection))
        else:
            raise EvalError(f"cannot iterate over {collection!r}")
        for key, value in pairs:
            if len(names) == 1:
                yield self.child(**{names[0]: value})
            else:
                yield self.child(**{names[0]: key, names[1]: value})

    def _for_tuple_expr(self, node):
        parts = _trees(node)
        intro, value_expr = parts[0], parts[1]
        cond = parts[2] if len(parts) > 2 else None
        out = []
        for ev in self._for_items(intro):
            if cond is not None and not _truthy(ev.eval(_trees(cond)[0]), "a for condition"):
                continue
            out.append(ev.eval(value_expr))
        return out

    def _for_object_expr(self, node):
        if any(isinstance(c, Token) and c.type == "ELLIPSIS" for c in node.children):
            raise Unsupported("grouping (...) in a for expression")
        parts = _trees(node)
        intro, key_expr, value_expr = parts[0], parts[1], parts[2]
        cond = parts[3] if len(parts) > 3 else None
        out = {}
        for ev in self._for_items(intro):
            if cond is not None and not _truthy(ev.eval(_trees(cond)[0]), "a for condition"):
                continue
            key = ev.eval(key_expr)
            if not isinstance(key, str):
                raise EvalError(f"for expression key must be a string, not {key!r}")
            if key in out:
                raise EvalError(f"duplicate key {key!r} in a for expression (Terraform requires '...')")
            out[key] = ev.eval(value_expr)
        return {k: out[k] for k in sorted(out)}

    # Functions --------------------------------------------------------------------------------

    def _function_call(self, node):
        parts = _trees(node)
        name = _name_of(parts[0])
        arg_nodes = _trees(parts[1]) if len(parts) > 1 else []
        if len(parts) > 1 and any(isinstance(c, Token) and c.type == "ELLIPSIS" for c in parts[1].children):
            raise Unsupported("argument expansion (...)")
        if name == "can":
            (arg,) = arg_nodes
            try:
                self.eval(arg)
            except EvalError:
                return False
            return True
        if name == "try":
            # The first argument that evaluates without an error (Terraform's try()).
            for arg in arg_nodes:
                try:
                    return self.eval(arg)
                except EvalError:
                    continue
            raise EvalError("try(): no argument could be evaluated")
        fn = FUNCTIONS.get(name)
        if fn is None:
            raise Unsupported(f"function {name}()")
        return fn(*[self.eval(a) for a in arg_nodes])


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b) and not (isinstance(a, list) and isinstance(b, list)):
        return False
    return a == b


def _one(values):
    values = _need(values, list, "one()")
    if len(values) > 1:
        raise EvalError(f"one(): {len(values)} elements")
    return values[0] if values else None


def _regex(pattern, string):
    m = re.search(_need(pattern, str, "regex()"), _need(string, str, "regex()"))
    if m is None:
        raise EvalError(f"regex: {pattern!r} does not match {string!r}")
    if m.groupdict():
        return m.groupdict()
    if m.groups():
        return list(m.groups())
    return m.group(0)


def _regexall(pattern, string):
    """Every non-overlapping match, each as regex() would return it; [] for none."""
    out = []
    for m in re.finditer(_need(pattern, str, "regexall()"), _need(string, str, "regexall()")):
        if m.groupdict():
            out.append(m.groupdict())
        elif m.groups():
            out.append(list(m.groups()))
        else:
            out.append(m.group(0))
    return out


def _replace(string, substring, replacement):
    string, substring = _need(string, str, "replace()"), _need(substring, str, "replace()")
    if len(substring) > 1 and substring.startswith("/") and substring.endswith("/"):
        return re.sub(substring[1:-1], replacement, string)
    return string.replace(substring, replacement)


def _length(value):
    if isinstance(value, (str, list, dict)):
        return len(value)
    raise EvalError(f"length() of {value!r}")


def _alltrue(values):
    return all(_truthy(v, "an alltrue() element") for v in _need(values, list, "alltrue()"))


def _distinct(values):
    out = []
    for v in _need(values, list, "distinct()"):
        if v not in out:
            out.append(v)
    return out


def _jsonencode(value):
    return json.dumps(to_plain(value), separators=(",", ":"), sort_keys=True)


def _keys(value):
    if not isinstance(value, dict):
        raise EvalError(f"keys() needs a map or object, not {value!r}")
    return sorted(value)


def _concat(*lists):
    out = []
    for item in lists:
        out.extend(_need(item, list, "concat()"))
    return out


def _join(sep, values):
    return _need(sep, str, "join()").join(to_template_string(v) for v in _need(values, list, "join()"))


def _substr(string, offset, length):
    string = _need(string, str, "substr()")
    if offset < 0 or length < -1:
        raise Unsupported("substr() with a negative offset or length")
    return string[int(offset) :] if length == -1 else string[int(offset) : int(offset) + int(length)]


def _trim(string, cutset):
    return _need(string, str, "trim()").strip(_need(cutset, str, "trim()"))


def _merge(*maps):
    # Terraform's merge(): later arguments win on a key they share.
    out = {}
    for item in maps:
        out.update(_need(item, dict, "merge()"))
    return out


def _flatten(values):
    out = []
    for item in _need(values, list, "flatten()"):
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _contains(collection, value):
    if value is None:
        raise EvalError("contains(): the value must not be null")
    return value in _need(collection, list, "contains()")


def _parse_cidr(prefix, what: str):
    """Go's net.ParseCIDR, as Terraform's cidr functions use it: <address>/<prefix length> (no
    netmask form, no leading zeros); the address may have host bits set."""
    prefix = _need(prefix, str, what)
    if not re.fullmatch(r"[^/]+/[0-9]+", prefix):
        raise EvalError(f"{what}: invalid CIDR address {prefix!r}")
    try:
        return ipaddress.ip_network(prefix, strict=False)
    except ValueError as e:
        raise EvalError(f"{what}: invalid CIDR address {prefix!r}: {e}") from None


def _cidrhost(prefix, hostnum):
    network = _parse_cidr(prefix, "cidrhost()")
    hostnum = int(hostnum)
    if hostnum < 0:
        hostnum += network.num_addresses
    if not 0 <= hostnum < network.num_addresses:
        raise EvalError(f"cidrhost(): prefix {prefix!r} has no host number {hostnum}")
    return str(network.network_address + hostnum)


def _cidrsubnet(prefix, newbits, netnum):
    network = _parse_cidr(prefix, "cidrsubnet()")
    newbits, netnum = int(newbits), int(netnum)
    length = network.prefixlen + newbits
    if newbits < 0 or length > network.max_prefixlen or not 0 <= netnum < 2**newbits:
        raise EvalError(f"cidrsubnet(): cannot take subnet {netnum} of {newbits} new bits from {prefix!r}")
    address = network.network_address + (netnum << (network.max_prefixlen - length))
    return f"{address}/{length}"


def _setintersection(first, *others):
    """Of sets of strings, as lists: Terraform orders a set of strings lexicographically."""
    out = set(_need(first, list, "setintersection()"))
    for other in others:
        out &= set(_need(other, list, "setintersection()"))
    return sorted(out)


FUNCTIONS = {
    "alltrue": _alltrue,
    "base64encode": lambda s: base64.b64encode(_need(s, str, "base64encode()").encode()).decode(),
    "cidrhost": _cidrhost,
    "cidrsubnet": _cidrsubnet,
    "concat": _concat,
    "contains": _contains,
    "distinct": _distinct,
    "flatten": _flatten,
    "floor": lambda n: math.floor(n),
    "join": _join,
    "jsonencode": _jsonencode,
    "keys": _keys,
    "length": _length,
    "lower": lambda s: _need(s, str, "lower()").lower(),
    "merge": _merge,
    "one": _one,
    "regex": _regex,
    "regexall": _regexall,
    "replace": _replace,
    "setintersection": _setintersection,
    "sha256": lambda s: hashlib.sha256(_need(s, str, "sha256()").encode()).hexdigest(),
    "substr": _substr,
    "trim": _trim,
    "values": lambda m: [m[k] for k in _keys(m)],
}
