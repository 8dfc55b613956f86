"""A throwaway PostgreSQL server for tests: a temporary cluster on a free localhost port.

``postgres_server()`` finds ``initdb``/``pg_ctl`` (on PATH, ``pg_config --bindir``, or
Debian's /usr/lib/postgresql/<version>/bin), creates a cluster in a temporary folder,
starts it on 127.0.0.1 (trust authentication, reachable from this machine only, its unix
socket in that folder), and stops and removes it on exit. PostgreSQL refuses to run as
root: as root the cluster belongs to the ``postgres`` system user and its commands run
through ``runuser``.

``unavailable_reason()`` says why no server can be started here (None if one can): the
tests skip with that reason, unless ``AUTOCOMPRESS_TEST_POSTGRES=require`` (CI) makes the
absence an error.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"  # the cluster's superuser role (initdb -U), whatever the OS user
REQUIRE_ENV = "AUTOCOMPRESS_TEST_POSTGRES"  # "require": fail instead of skipping


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
            if out:
                candidates.append(Path(out))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as: this one, or ``postgres`` when root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def unavailable_reason() -> str | None:
    """Why a PostgreSQL test server cannot run here; None when it can."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install psycopg2-binary, or pip install -e '.[test]')"
    if find_bindir() is None:
        return ("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin "
                "(Debian: apt-get install postgresql)")
    if _server_user() is None:
        return "running as root and there is no 'postgres' system user to run the server as"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root and there is no runuser to start the server as 'postgres'"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    root: Path
    bindir: Path
    port: int
    user: pwd.struct_passwd

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", **query: str) -> str:
        """A SQLAlchemy URL of ``database`` (psycopg2 driver); ``query``: libpq options."""
        options = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}" + (f"?{options}" if options else "")

    def connect(self, database: str = "postgres"):
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database)
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> str:
        """Create database ``name``; its URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        return self.url(name)

    def query(self, sql: str, *args: object, database: str = "postgres") -> list[tuple]:
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args or None)  # no args: a literal % stays itself
                return cursor.fetchall()
        finally:
            connection.close()

    # ---------------------------------------------------------------- running commands as the server's user
    def run(self, *args: str | Path, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        result = subprocess.run(command, cwd=self.root, env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{self._log_tail()}"
            )
        return result

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\nserver log:\n" + "\n".join(self.log.read_text().splitlines()[-30:])
        return ""

    # ---------------------------------------------------------------- lifecycle
    def init(self) -> None:
        self.run(self.bindir / "initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                 "--locale=C", "--no-sync")

    def start(self) -> None:
        # listen on 127.0.0.1 only (trust authentication is for this machine only); the unix
        # socket in the cluster's folder; durability off: a throwaway cluster
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self.run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start",
                 timeout=90)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run(self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)


@contextlib.contextmanager
def postgres_server(attempts: int = 3) -> Iterator[PostgresServer]:
    """A running throwaway server; stopped and removed on exit."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"cannot start PostgreSQL: {reason}")
    bindir, user = find_bindir(), _server_user()
    assert bindir is not None and user is not None
    # in /tmp: the server's user can reach it (a root's TMPDIR may be private), and the unix
    # socket's path stays under its 107-byte limit
    root = Path(tempfile.mkdtemp(prefix="autocompress-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    server = PostgresServer(root=root, bindir=bindir, port=0, user=user)
    try:
        os.chown(root, user.pw_uid, user.pw_gid)
        server.init()
        for attempt in range(attempts):  # another process may take the free port first
            server.port = free_port()
            try:
                server.start()
                break
            except RuntimeError:
                server.stop()
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
