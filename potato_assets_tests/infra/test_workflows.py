"""GitHub Actions workflows: pinned actions, minimal permissions, OIDC only, actionlint clean."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from potato_assets_tests.infra._support import ACTIONLINT, INSTALL_HINT, REPO_ROOT, workflow_files

SHA_PINNED = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
EXPECTED = {"ci.yml", "data-quality.yml", "infra.yml"}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    if True in data:  # PyYAML reads the bare key `on` as boolean True
        data["on"] = data.pop(True)
    return data


def _uses(workflow: dict[str, Any]) -> list[str]:
    refs = []
    for job in workflow["jobs"].values():
        if "uses" in job:  # reusable workflow call
            refs.append(job["uses"])
        refs.extend(step["uses"] for step in job.get("steps", []) if "uses" in step)
    return refs


def test_expected_workflows_exist() -> None:
    assert {p.name for p in workflow_files()} >= EXPECTED


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_sha(path: Path) -> None:
    refs = _uses(_load(path))
    assert refs, f"{path.name} uses no action"
    for ref in refs:
        assert SHA_PINNED.match(ref), f"{path.name}: {ref} is not pinned to a 40-hex commit SHA"
    # And each pin names its release in a trailing comment, for humans and Dependabot.
    for line in path.read_text().splitlines():
        match = USES_LINE.match(line)
        if match:
            assert re.search(r"#\s*v\d+(\.\d+)*\s*$", match["rest"]), f"{path.name}: {line.strip()}"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.name)
def test_permissions_are_minimal_per_job(path: Path) -> None:
    workflow = _load(path)
    assert workflow.get("permissions") == {}, f"{path.name}: top-level permissions must be {{}}"
    for name, job in workflow["jobs"].items():
        perms = job.get("permissions")
        assert isinstance(perms, dict), f"{path.name}:{name} must declare permissions"
        assert perms.get("contents") == "read", f"{path.name}:{name}"
        extra = {k: v for k, v in perms.items() if k != "contents"}
        if path.name == "infra.yml" and name in {"plan", "apply"}:
            assert extra == {"id-token": "write"}, f"{path.name}:{name}: {extra}"
        else:
            assert extra == {}, f"{path.name}:{name}: {extra}"


def test_no_long_lived_aws_keys_anywhere() -> None:
    for path in workflow_files():
        text = path.read_text()
        for needle in ("aws-access-key-id", "aws-secret-access-key", "AWS_SECRET_ACCESS_KEY"):
            assert needle not in text, f"{path.name} mentions {needle}"


def test_infra_workflow_plans_on_prs_and_applies_on_main_in_protected_environment() -> None:
    workflow = _load(REPO_ROOT / ".github/workflows/infra.yml")
    assert set(workflow["on"]) >= {"pull_request", "push"}
    assert workflow["on"]["push"]["branches"] == ["main"]
    jobs = workflow["jobs"]
    fmt_steps = " ".join(s.get("run", "") for s in jobs["fmt-validate"]["steps"])
    assert "terraform fmt -check" in fmt_steps and "validate" in fmt_steps

    plan, apply = jobs["plan"], jobs["apply"]
    assert "pull_request" in plan["if"]
    assert "refs/heads/main" in apply["if"] and "push" in apply["if"]
    # The human gate is a credential-less job in the protected environment; the apply job runs
    # outside it, so its token subject is the ref the apply role trusts (ref:refs/heads/main).
    approve = jobs["approve"]
    assert approve["environment"] == "dev" and "refs/heads/main" in approve["if"]
    assert approve["permissions"] == {"contents": "read"}  # no id-token: no AWS credentials
    assert "environment" not in apply
    assert "approve" in apply["needs"]
    for job, var in ((plan, "AWS_PLAN_ROLE_ARN"), (apply, "AWS_APPLY_ROLE_ARN")):
        creds = [s for s in job["steps"] if "configure-aws-credentials" in s.get("uses", "")]
        assert len(creds) == 1
        assert creds[0]["with"]["role-to-assume"] == f"${{{{ vars.{var} }}}}"
        assert set(creds[0]["with"]) == {"role-to-assume", "role-session-name", "aws-region"}
    assert any("apply" in s.get("run", "") for s in apply["steps"])
    assert not any("apply" in s.get("run", "") for s in plan["steps"])


def test_ci_and_data_quality_workflows_run_the_make_targets() -> None:
    ci = (REPO_ROOT / ".github/workflows/ci.yml").read_text()
    for needle in ("make lint", "make test", "bandit", "pip-audit", "tools/infra/install.sh"):
        assert needle in ci, needle
    dq = _load(REPO_ROOT / ".github/workflows/data-quality.yml")
    steps = dq["jobs"]["asset-checks"]["steps"]
    assert any(s.get("run") == "make run" for s in steps)
    upload = [s for s in steps if "upload-artifact" in s.get("uses", "")]
    assert len(upload) == 1
    assert upload[0]["if"] == "${{ always() }}"
    assert upload[0]["with"]["path"].startswith("data/lake/gold/reports")


@pytest.mark.skipif(not ACTIONLINT.exists(), reason=f"actionlint is not installed at {ACTIONLINT}; {INSTALL_HINT}")
def test_actionlint_passes_on_every_workflow() -> None:
    files = [str(p) for p in workflow_files()]
    result = subprocess.run(
        [str(ACTIONLINT), *files],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(files)} file(s), 0 problem(s)" in result.stdout
