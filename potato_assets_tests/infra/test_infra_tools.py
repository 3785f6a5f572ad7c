"""Static analysis of terraform/: checkov, terraform fmt, terraform validate (where available)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from potato_assets_tests.infra._support import (
    CHECKOV,
    DEV_ENV_DIR,
    INSTALL_HINT,
    REPO_ROOT,
    TERRAFORM_DIR,
    tf_files,
)

# Where a machine ships provider plugins for offline `terraform init` (a filesystem mirror).
TF_PLUGIN_DIR = Path(os.environ.get("POTATO_TF_PLUGIN_DIR", "/opt/tf-plugins"))
TERRAFORM = shutil.which("terraform")


def _checkov_report() -> dict:
    result = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(TERRAFORM_DIR),
            "--framework",
            "terraform",
            "--skip-path",
            r"\.terraform",
            "--skip-download",  # no network calls to the vendor platform
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.stdout.strip(), result.stderr[-4000:]
    report = json.loads(result.stdout)
    if isinstance(report, list):  # one entry per framework
        (report,) = [r for r in report if r.get("check_type") == "terraform"]
    return report


@pytest.mark.skipif(not CHECKOV.exists(), reason=f"checkov is not installed at {CHECKOV}; {INSTALL_HINT}")
def test_checkov_reports_no_failed_check() -> None:
    report = _checkov_report()
    summary = report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']}) {c['check_name']}"
        for c in report["results"].get("failed_checks", [])
    ]
    assert summary["failed"] == 0, "\n".join(failed)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100, summary  # it really scanned the modules

    # Skips stay few, and each one carries a reason in the code.
    skipped = report["results"].get("skipped_checks", [])
    assert len({(c["check_id"], c["file_path"]) for c in skipped}) <= 5, skipped
    for check in skipped:
        assert len(check["check_result"].get("suppress_comment", "")) > 20, check


def test_every_checkov_skip_in_the_code_has_a_reason() -> None:
    for path in tf_files():
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                _, _, spec = line.partition("checkov:skip=")
                check_id, sep, reason = spec.partition(":")
                assert check_id.startswith("CKV"), line
                assert sep and len(reason.strip()) > 20, f"{path}: skip without a reason: {line}"


@pytest.mark.skipif(TERRAFORM is None, reason="terraform is not on PATH; `terraform fmt` not run")
def test_terraform_fmt_check() -> None:
    assert TERRAFORM is not None
    result = subprocess.run(
        [TERRAFORM, "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(TERRAFORM is None, reason="terraform is not on PATH; `terraform validate` not run")
@pytest.mark.skipif(
    not TF_PLUGIN_DIR.is_dir(),
    reason=f"no provider mirror at {TF_PLUGIN_DIR} (POTATO_TF_PLUGIN_DIR) for an offline "
    "`terraform init`; infra.yml runs validate in GitHub Actions",
)
def test_terraform_validate_offline(tmp_path: Path) -> None:
    assert TERRAFORM is not None
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{TF_PLUGIN_DIR}"\n  }}\n}}\n')
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(cli_config),
        "TF_DATA_DIR": str(tmp_path / "data"),  # keep .terraform/ out of the work tree
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
    lock = DEV_ENV_DIR / ".terraform.lock.hcl"
    lock_before = lock.read_text()
    try:
        init = subprocess.run(
            [
                TERRAFORM,
                f"-chdir={DEV_ENV_DIR}",
                "init",
                "-backend=false",
                "-input=false",
                "-no-color",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        if init.returncode != 0 and "Failed to query available provider packages" in init.stderr:
            pytest.skip(f"the mirror at {TF_PLUGIN_DIR} lacks the pinned AWS provider")
        assert init.returncode == 0, init.stdout + init.stderr
        validate = subprocess.run(
            [TERRAFORM, f"-chdir={DEV_ENV_DIR}", "validate", "-no-color"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        assert validate.returncode == 0, validate.stdout + validate.stderr
    finally:
        lock.write_text(lock_before)  # init may add hashes; never change the committed lock
