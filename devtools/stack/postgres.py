"""Local PostgreSQL (newest /usr/lib/postgresql/*/bin) on 127.0.0.1:<pg_port>, data under ``.stack/pg``.

PostgreSQL refuses to run as root, so when the caller is root every server-side command runs as
``settings.pg_os_user`` through ``runuser``; otherwise it runs as the current user.

Layout: ``pg/data`` (cluster, settings in ``data/hub.conf``), ``pg/run`` (unix socket), ``pg/postgres.log``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from devtools.stack.kafka import StackError, pid_alive, port_open, read_pid, stack_lock
from infra.config import get_settings

READY_TIMEOUT_S = 60.0
PG_INSTALL_ROOT = Path("/usr/lib/postgresql")
PG_HINT = (
    "PostgreSQL server not found under /usr/lib/postgresql/*/bin: "
    "install it with `apt-get install postgresql-15`"
)


def pg_root() -> Path:
    """``.stack/pg`` in the project — unless PostgreSQL's unprivileged user cannot reach it (a checkout
    under a private home such as ``/root``): then a folder of the same name under the temp directory,
    keyed by the project path so two checkouts never share one."""
    preferred = get_settings().stack_dir / "pg"
    if os.geteuid() != 0 or _world_traversable(preferred.parent):
        return preferred
    key = hashlib.sha1(str(preferred).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ittai-hub-pg-{key}"


def _world_traversable(path: Path) -> bool:
    """Every existing ancestor of ``path`` lets others pass through (the x bit for others)."""
    for folder in [path, *path.parents]:
        if folder.exists() and not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def data_dir() -> Path:
    return pg_root() / "data"


def run_dir() -> Path:
    return pg_root() / "run"


def log_file() -> Path:
    return pg_root() / "postgres.log"


def pg_bin() -> Path:
    """The newest installed server bin dir (needs initdb, pg_ctl and postgres)."""
    found = []
    for d in PG_INSTALL_ROOT.glob("*/bin"):
        if all((d / exe).exists() for exe in ("initdb", "pg_ctl", "postgres")):
            nums = tuple(int(x) for x in re.findall(r"\d+", d.parent.name))
            found.append((nums, d))
    if not found:
        raise StackError(PG_HINT)
    return max(found)[1]


def _as_pg_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    user = get_settings().pg_os_user
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise StackError(
            f"OS user {user!r} for PostgreSQL does not exist: create it or set HUB_PG_OS_USER"
        ) from None
    runuser = shutil.which("runuser") or ("/usr/sbin/runuser" if Path("/usr/sbin/runuser").exists() else None)
    if runuser is None:
        raise StackError(
            "runuser not found (needed to run PostgreSQL as a non-root user): install util-linux"
        )
    return [runuser, "-u", user, "--"]


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(get_settings().pg_os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(cmd: list[str], what: str, **kw: object) -> str:
    proc = subprocess.run(
        [*_as_pg_user(), *cmd],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        **kw,  # type: ignore[call-overload]
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()
        raise StackError(f"{what} failed: {' | '.join(out[-3:])} (log: {log_file()})")
    return str(proc.stdout)


def _conf() -> str:
    s = get_settings()
    return (
        f"listen_addresses = '{s.pg_host}'\n"
        f"port = {s.pg_port}\n"
        f"unix_socket_directories = '{run_dir()}'\n"
        "fsync = on\n"
        "synchronous_commit = on\n"
        "max_connections = 200\n"
        "shared_buffers = 256MB\n"
    )


def _init() -> None:
    """initdb once (trust on the unix socket, scram-sha-256 over TCP) and write ``hub.conf``."""
    root = pg_root()
    for d in (root, run_dir()):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
        _chown(d)
    if not (data_dir() / "PG_VERSION").exists():
        shutil.rmtree(data_dir(), ignore_errors=True)
        pwfile = root / "superuser.pw"
        pwfile.write_text("postgres\n")
        _chown(pwfile)
        try:
            cmd = [str(pg_bin() / "initdb"), "-D", str(data_dir()), "-U", "postgres", "-E", "UTF8"]
            cmd += ["--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
            _run(cmd, "initdb")
        finally:
            pwfile.unlink(missing_ok=True)
        with open(data_dir() / "postgresql.conf", "a") as fh:
            fh.write("\ninclude = 'hub.conf'\n")
    conf = data_dir() / "hub.conf"
    conf.write_text(_conf())
    _chown(conf)


def pg_pid() -> int | None:
    """Postmaster pid if it runs on our data dir."""
    pid = read_pid(data_dir() / "postmaster.pid")
    return pid if pid is not None and pid_alive(pid, str(data_dir())) else None


def is_pg_up() -> bool:
    """The postmaster runs and accepts TCP connections (cheap; no login)."""
    return pg_pid() is not None and port_open(get_settings().pg_port, get_settings().pg_host)


async def _bootstrap_and_check() -> None:
    s = get_settings()
    sup = await asyncpg.connect(host=str(run_dir()), port=s.pg_port, user="postgres", database="postgres")
    try:
        user, db, pw = s.pg_user, s.pg_database, s.pg_password.replace("'", "''")
        if not await sup.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
            await sup.execute(f"CREATE ROLE \"{user}\" LOGIN CREATEDB PASSWORD '{pw}'")
        if not await sup.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db):
            await sup.execute(f'CREATE DATABASE "{db}" OWNER "{user}"')
    finally:
        await sup.close()
    conn = await asyncpg.connect(s.pg_dsn, timeout=5)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _wait_ready(timeout: float = READY_TIMEOUT_S) -> None:
    s = get_settings()
    isready = [str(pg_bin() / "pg_isready"), "-q", "-h", s.pg_host, "-p", str(s.pg_port)]
    deadline = time.monotonic() + timeout
    while subprocess.run(isready, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise StackError(f"PostgreSQL not ready after {timeout:.0f} s; see {log_file()}")
        time.sleep(0.2)
    try:
        asyncio.run(_bootstrap_and_check())
    except (OSError, asyncpg.PostgresError) as exc:
        raise StackError(f"PostgreSQL is up but login as {s.pg_user!r} failed: {exc}") from exc


def _wait_old_postmaster_gone(timeout: float = 10.0) -> None:
    """After a crash/kill, wait until the old postmaster pid is fully gone (also as a zombie).

    PostgreSQL clears stale lock files itself (and refuses if old backends still hold its shared
    memory), but it takes a not-yet-reaped zombie for a live postmaster and exits."""
    old = read_pid(data_dir() / "postmaster.pid")
    deadline = time.monotonic() + timeout
    while old is not None and Path(f"/proc/{old}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def pg_check() -> None:
    """Raise StackError (one line naming what to install) if PostgreSQL cannot be run here."""
    pg_bin()
    _as_pg_user()


def pg_ensure_up() -> None:
    """initdb if needed, start, create role/database (idempotent) and check a real login."""
    with stack_lock():
        if not is_pg_up():
            pg_check()
            _init()
            if pg_pid() is None:
                _wait_old_postmaster_gone()
                log = log_file()
                log.touch()
                _chown(log)
                cmd = [str(pg_bin() / "pg_ctl"), "-D", str(data_dir()), "-l", str(log), "-w", "-t", "60"]
                _run([*cmd, "start"], "pg_ctl start", start_new_session=True)
        _wait_ready()


def pg_down() -> None:
    """``pg_ctl stop -m fast``. Idempotent."""
    with stack_lock():
        if pg_pid() is None:
            return
        _run(
            [str(pg_bin() / "pg_ctl"), "-D", str(data_dir()), "-m", "fast", "-w", "-t", "60", "stop"],
            "pg_ctl stop",
        )


def pg_restart() -> None:
    """``pg_ctl restart -m fast``: every session ends (clients see ``AdminShutdownError`` or a closed
    connection, then ``CannotConnectNowError`` while it starts), as in a real database restart."""
    with stack_lock():
        if pg_pid() is None:
            pg_ensure_up()
            return
        log = log_file()
        cmd = [
            str(pg_bin() / "pg_ctl"),
            "-D",
            str(data_dir()),
            "-l",
            str(log),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
        ]
        _run([*cmd, "restart"], "pg_ctl restart", start_new_session=True)
        _wait_ready()


def pg_kill() -> None:
    """SIGKILL the postmaster (a crash): the next ``pg_ensure_up`` recovers from the WAL."""
    with stack_lock():
        pid = pg_pid()
        if pid is not None:
            os.kill(pid, 9)
            _wait_old_postmaster_gone()


def pg_reset() -> None:
    """Stop PostgreSQL and delete its data dir."""
    with stack_lock():
        pg_down()
        shutil.rmtree(pg_root(), ignore_errors=True)


def pg_address() -> str:
    s = get_settings()
    return f"{s.pg_host}:{s.pg_port}"
