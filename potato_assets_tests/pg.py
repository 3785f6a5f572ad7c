"""A private PostgreSQL cluster for tests: initdb in a temp dir, 127.0.0.1 only, a free port,
SSL required with a self-signed certificate (as RDS with rds.force_ssl), stopped at teardown.

Debian's binaries (`postgresql-15`) are looked up under /usr/lib/postgresql/*/bin, then on PATH.
PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from potato_assets_tests.helpers import free_port

SUPERUSER = "potato"
PASSWORD = "potato-test-password"  # nosec B105: a throwaway cluster on loopback


def pg_bin_dir() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def unavailable_reason() -> str | None:
    """Why a private cluster cannot start here, or None."""
    if pg_bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
    if shutil.which("openssl") is None:
        return "openssl not found (needed for the cluster's self-signed certificate)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the cluster as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


@dataclass
class PostgresCluster:
    port: int
    data_dir: Path
    bin_dir: Path
    host: str = "127.0.0.1"
    username: str = SUPERUSER
    password: str = PASSWORD

    def url(self, db_name: str, scheme: str = "postgresql+psycopg2") -> str:
        return f"{scheme}://{self.username}:{self.password}@{self.host}:{self.port}/{db_name}?sslmode=require"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url("postgres", scheme="postgresql"))
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def query(self, db_name: str, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(self.url(db_name, scheme="postgresql"))
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        finally:
            conn.close()

    def dagster_env(self, db_name: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/dagster.postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": db_name,
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
        }


def _as_cluster_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], **kwargs) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def private_cluster() -> Iterator[PostgresCluster]:
    """Start a throwaway cluster; the caller checks ``unavailable_reason()`` first."""
    bin_dir = pg_bin_dir()
    assert bin_dir is not None
    # Not under pytest's tmp_path: its root-owned 0700 parents are closed to the postgres user.
    root = Path(tempfile.mkdtemp(prefix="potato-pg-"))
    data_dir = root / "data"
    port = free_port()
    try:
        pwfile = root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        # The key must be private to the server's user (postgres refuses a group-readable key).
        _run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=127.0.0.1", "-keyout", str(root / "server.key"), "-out", str(root / "server.crt"),
            ]
        )  # fmt: skip
        os.chmod(root / "server.key", 0o600)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in [root, pwfile, root / "server.key", root / "server.crt"]:
                os.chown(path, user.pw_uid, user.pw_gid)
        _run(
            _as_cluster_user(
                [
                    str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                    "--auth-local=reject", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                ]
            )
        )  # fmt: skip
        # TCP on loopback only, no Unix socket; only SSL connections are accepted (no `host` line).
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\n"
                f"port = {port}\n"
                "unix_socket_directories = ''\n"
                "ssl = on\n"
                f"ssl_cert_file = '{root / 'server.crt'}'\n"
                f"ssl_key_file = '{root / 'server.key'}'\n"
                "max_connections = 200\n"
            )
        (data_dir / "pg_hba.conf").write_text(f"hostssl all {SUPERUSER} 127.0.0.1/32 scram-sha-256\n")
        _run(
            _as_cluster_user(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data_dir),
                    "-l",
                    str(root / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
        )
        cluster = PostgresCluster(port=port, data_dir=data_dir, bin_dir=bin_dir)
        deadline = time.monotonic() + 30
        while True:
            try:
                cluster.query("postgres", "SELECT 1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            yield cluster
        finally:
            subprocess.run(
                _as_cluster_user([str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
