"""Shared paths and HCL loading for the infra tests."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "terraform"
MODULES_DIR = TERRAFORM_DIR / "modules"
DEV_ENV_DIR = TERRAFORM_DIR / "envs" / "dev"
WORKFLOWS_DIR = REPO_ROOT / ".github" / "workflows"
TOOLS_DIR = REPO_ROOT / ".tools"
CHECKOV = TOOLS_DIR / "checkov" / "bin" / "checkov"
ACTIONLINT = TOOLS_DIR / "actionlint" / "bin" / "actionlint"
INSTALL_HINT = "run `bash tools/infra/install.sh` to install it"

Hcl = dict[str, Any]

_INTERPOLATION = re.compile(r"^\$\{(.*)\}$", re.DOTALL)


def tf_files() -> list[Path]:
    return sorted(p for p in TERRAFORM_DIR.rglob("*.tf") if ".terraform" not in p.parts)


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])


def _load_file(path: Path) -> Hcl:
    import hcl2  # imported lazily: tests skip when python-hcl2 is missing

    with path.open() as fh:
        options_cls = getattr(hcl2, "SerializationOptions", None)
        if options_cls is None:  # python-hcl2 < 8 already emits this plain shape
            return hcl2.load(fh)  # type: ignore[no-any-return]
        options = options_cls(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
        return hcl2.load(fh, serialization_options=options)  # type: ignore[no-any-return]


@cache
def load_dir(directory: Path) -> Hcl:
    """Merge every top-level block list of the .tf files of one directory (one module)."""
    merged: Hcl = {}
    for path in sorted(directory.glob("*.tf")):
        for key, value in _load_file(path).items():
            merged.setdefault(key, []).extend(value)
    return merged


def blocks(module: Hcl, kind: str, type_: str) -> dict[str, Hcl]:
    """`blocks(m, "resource", "aws_s3_bucket")` -> {name: body}."""
    found: dict[str, Hcl] = {}
    for entry in module.get(kind, []):
        for name, body in entry.get(type_, {}).items():
            found[name] = body
    return found


def one(module: Hcl, kind: str, type_: str, name: str) -> Hcl:
    bodies = blocks(module, kind, type_)
    assert name in bodies, f"{kind} {type_}.{name} not found (have {sorted(bodies)})"
    return bodies[name]


def module_calls(module: Hcl) -> dict[str, Hcl]:
    calls: dict[str, Hcl] = {}
    for entry in module.get("module", []):
        calls.update(entry)
    return calls


def variables(module: Hcl) -> dict[str, Hcl]:
    result: dict[str, Hcl] = {}
    for entry in module.get("variable", []):
        result.update(entry)
    return result


def locals_of(module: Hcl) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for entry in module.get("locals", []):
        result.update(entry)
    return result


def unwrap(expr: Any) -> Any:
    """'${var.x}' -> 'var.x'; other values unchanged."""
    if isinstance(expr, str):
        match = _INTERPOLATION.match(expr)
        if match and "${" not in match.group(1):
            return match.group(1)
    return expr


def resolve(module: Hcl, expr: Any) -> Any:
    """Resolve a bare `var.NAME` (to its default) or `local.NAME` reference, recursively."""
    ref = unwrap(expr)
    if isinstance(ref, str) and re.fullmatch(r"var\.\w+", ref):
        var = variables(module)[ref.split(".", 1)[1]]
        assert "default" in var, f"{ref} has no default"
        return resolve(module, var["default"])
    if isinstance(ref, str) and re.fullmatch(r"local\.\w+", ref):
        return resolve(module, locals_of(module)[ref.split(".", 1)[1]])
    return expr


def statements(document: Hcl) -> list[Hcl]:
    """Statements of an aws_iam_policy_document, including `dynamic "statement"` contents."""
    found = list(document.get("statement", []))
    for dyn in document.get("dynamic", []):
        if "statement" in dyn:
            found.extend(dyn["statement"].get("content", []))
    return found


def policy_documents() -> dict[str, Hcl]:
    """Every aws_iam_policy_document under terraform/, keyed "module_dir/name"."""
    docs: dict[str, Hcl] = {}
    for directory in sorted({p.parent for p in tf_files()}):
        module = load_dir(directory)
        rel = directory.relative_to(TERRAFORM_DIR).as_posix()
        for name, body in blocks(module, "data", "aws_iam_policy_document").items():
            docs[f"{rel}/{name}"] = body
    return docs
