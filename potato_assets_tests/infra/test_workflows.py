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
EXPECTED = {"ci.yml", "data-quality.yml", "infra.yml", "lake-checks.yml"}
# Jobs that assume an AWS role through OIDC: the only ones with id-token: write.
OIDC_JOBS = {("infra.yml", "plan"), ("infra.yml", "apply"), ("lake-checks.yml", "production")}


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
        if (path.name, name) in OIDC_JOBS:
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


def test_the_uv_release_is_named_once_in_dot_uv_version() -> None:
    version = (REPO_ROOT / ".uv-version").read_text().strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    for path in [REPO_ROOT / "Makefile", *workflow_files()]:
        text = path.read_text()
        assert not re.search(r"uv==\d", text), f"{path.name} pins uv itself; read .uv-version instead"
        assert version not in text, f"{path.name} repeats the uv release {version}"


def test_the_test_job_runs_the_seed_study_tests_on_a_pinned_checkout() -> None:
    steps = _load(REPO_ROOT / ".github/workflows/ci.yml")["jobs"]["test"]["steps"]
    seed = [s for s in steps if s.get("with", {}).get("repository") == "altalanta/potato-weight-nutrition"]
    assert len(seed) == 1
    assert re.fullmatch(r"[0-9a-f]{40}", seed[0]["with"]["ref"]), "the seed project is pinned to a commit"
    test = next(s for s in steps if s.get("run") == "make test")
    seed_dir = test["env"]["POTATO_SEED_STUDY_DIR"]
    assert seed_dir == f"${{{{ github.workspace }}}}/{seed[0]['with']['path']}/data"


def test_lake_checks_workflow_builds_with_main_checks_with_the_pr_and_reads_production_read_only() -> None:
    workflow = _load(REPO_ROOT / ".github/workflows/lake-checks.yml")
    paths = workflow["on"]["pull_request"]["paths"]
    for needle in (
        "potato_assets/contracts/**",
        "potato_assets/defs/**/checks.py",
        "potato_assets/defs/contract_checks.py",
        "potato_assets/lib/contracts.py",
    ):
        assert needle in paths, needle
    assert workflow["on"]["schedule"]
    pr, production = workflow["jobs"]["pull-request"], workflow["jobs"]["production"]

    assert "pull_request" in pr["if"]
    checkouts = [s for s in pr["steps"] if "actions/checkout" in s.get("uses", "")]
    main, head = checkouts[0]["with"], checkouts[1]["with"]
    assert main["ref"] == "${{ github.event.pull_request.base.ref }}" and main["path"] == "main"
    assert "ref" not in head and head["path"] == "pr"
    # The steps are the documented commands: main materialises, the pull request only checks.
    runs = [(s.get("working-directory"), s["run"]) for s in pr["steps"] if "run" in s]
    assert runs[:2] == [("main", "make run"), ("pr", "make checks")]
    assert {r for _, r in runs} == {"make run", "make checks"}
    assert pr["env"]["POTATO_LAKE_URI"] == "${{ github.workspace }}/lake"

    assert "schedule" in production["if"] and "refs/heads/main" in production["if"]
    assert production["environment"] == "lake-checks"  # the role's trusted subject
    (creds,) = [s for s in production["steps"] if "configure-aws-credentials" in s.get("uses", "")]
    assert creds["with"]["role-to-assume"] == "${{ vars.AWS_LAKE_CHECKS_ROLE_ARN }}"
    assert [s["run"] for s in production["steps"] if "run" in s] == ["make checks"]


def test_make_checks_wraps_the_checks_only_job() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "\nchecks: setup\n" in makefile
    assert "$(BIN)/python -m potato_assets.lake_checks $(if $(LAYER),--layer $(LAYER))" in makefile
    assert "dagster job execute -m potato_assets.definitions -j lake_checks" in makefile
