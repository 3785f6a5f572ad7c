"""The local stacks under observability/: loopback ports only, no default passwords, no anonymous
access. Parsed as YAML, so every service and port of every compose file is covered."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from potato_assets_tests.helpers import REPO

COMPOSE_FILES = sorted((REPO / "observability").rglob("compose*.y*ml"))
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY", re.I)
# ${VAR:?message}: compose refuses to start while VAR is unset or empty.
REQUIRED_VARIABLE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}$")


def services(path: Path) -> dict[str, dict]:
    return yaml.safe_load(path.read_text())["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_there_are_compose_files():
    assert {p.relative_to(REPO).as_posix() for p in COMPOSE_FILES} >= {
        "observability/compose.yaml",
        "observability/marquez/compose.yaml",
    }


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_port_is_published_on_loopback_only(path):
    for name, service in services(path).items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):  # long syntax
                assert port.get("host_ip") == "127.0.0.1", f"{path.name}: {name} publishes {port} beyond loopback"
            else:
                assert str(port).startswith("127.0.0.1:"), f"{path.name}: {name} publishes {port!r} on every interface"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_password_has_a_default(path):
    for name, service in services(path).items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VARIABLE.match(value), (
                    f"{path.name}: {name} sets {key} to {value!r}; it must be a required variable ${{VAR:?set VAR}}"
                )


def test_grafana_has_no_anonymous_access_and_a_required_admin_password():
    env = environment(services(REPO / "observability" / "compose.yaml")["grafana"])
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "false"
    assert REQUIRED_VARIABLE.match(env["GF_SECURITY_ADMIN_PASSWORD"])
    assert env.get("GF_USERS_ALLOW_SIGN_UP", "").lower() == "false"


def test_the_checker_rejects_what_it_should(tmp_path):
    bad = {"services": {"x": {"ports": ["3000:3000"], "environment": {"DB_PASSWORD": "marquez"}}}}
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(AssertionError, match="every interface"):
        test_every_port_is_published_on_loopback_only(path)
    with pytest.raises(AssertionError, match="required variable"):
        test_no_password_has_a_default(path)
