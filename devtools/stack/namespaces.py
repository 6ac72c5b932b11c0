"""Leases on the throw-away topic namespaces (and databases) of test sessions and benches.

Every test session and bench run makes topics in namespaces of its own. A run that ends cleanly deletes
them; a killed one used to leave them on the shared development broker, which then ran out of memory
under ~14,000 dead partitions. Now each namespace a run makes is leased first, in
``<stack_dir>/namespaces/<namespace>.json``: the owner's PID and that process's start time (so a reused
PID is not taken for the owner), when it was made, and the run's database if it has one of its own.
``sweep`` deletes what is leased to a process that no longer runs.

Safe by construction: only leased namespaces are ever deleted (a namespace nobody leased, such as the
demo's ``ittai`` or another checkout's, is never touched); ``ittai`` and the hub's own databases cannot be
leased; a live owner's lease is kept.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from infra.config import Settings
from infra.kafka import client_options

NEVER_SWEPT_NAMESPACES = frozenset({"ittai"})  # the demo's and a deployment's default
_THROWAWAY_DATABASE = re.compile(r"^ittai_(test|bench)_[a-z0-9_]{1,40}$", re.ASCII)


class LeaseTaken(Exception):
    """A live lease of this namespace records another database than the one claimed with it."""


@dataclass(frozen=True)
class Lease:
    namespace: str
    pid: int
    pid_started: str  # the owner's start time as the kernel counts it ('' where /proc is missing)
    created: str  # UTC, ISO 8601
    database: str | None = None


def _ledger(settings: Settings) -> Path:
    return settings.stack_dir / "namespaces"


def _process_started(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): a PID and this pair name one
    process, whereas a PID alone may be reused by an unrelated one after the owner died."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def owner_alive(lease: Lease) -> bool:
    try:
        os.kill(lease.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return _process_started(lease.pid) == lease.pid_started


def claim(settings: Settings, *, database: str | None = None, pid: int | None = None) -> Lease | None:
    """Lease ``settings.topic_namespace`` (and ``database``) to process ``pid`` (this one by default).
    Call it before making the topics, so a run killed in between leaves nothing unleased. A namespace
    already leased to a live process stays that process's; claimed with another database than its lease
    records, ``LeaseTaken`` (this process's lease without one gets it). ``ittai`` is never leased (None), and a
    database is recorded only if it is a throw-away one (``ittai_test_*``, ``ittai_bench_*``)."""
    namespace = settings.topic_namespace
    if namespace in NEVER_SWEPT_NAMESPACES:
        return None
    if database is not None and not _THROWAWAY_DATABASE.match(database):
        database = None
    path = _ledger(settings) / f"{namespace}.json"
    existing = _read(path)
    owner = os.getpid() if pid is None else pid
    if existing is not None and owner_alive(existing):
        if database is None or existing.database == database:
            return existing
        if existing.pid != owner or existing.database is not None:
            # Handing back a lease of another database would have its release drop that database and
            # delete the namespace's topics under whoever still uses them (a test's scratch database
            # claimed under its session's namespace did exactly that): a scratch database wants a
            # namespace of its own.
            raise LeaseTaken(f"namespace {namespace} is leased with another database ({existing.database})")
        # this process's lease, made with the namespace's first topics before its database was named
    lease = Lease(
        namespace=namespace,
        pid=owner,
        pid_started=_process_started(owner),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        database=database,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(asdict(lease), tmp)
    os.replace(tmp.name, path)  # atomic: a concurrent sweep reads a whole lease or none
    return lease


def leases(settings: Settings) -> list[Lease]:
    folder = _ledger(settings)
    if not folder.is_dir():
        return []
    found = [_read(p) for p in sorted(folder.glob("*.json"))]
    return [lease for lease in found if lease is not None]


def _read(path: Path) -> Lease | None:
    try:
        lease = Lease(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if lease.namespace != path.stem or lease.namespace in NEVER_SWEPT_NAMESPACES:
        return None  # not a lease this module wrote: never acted on
    return lease


async def sweep(settings: Settings) -> list[Lease]:
    """Delete the topics and databases leased to processes that no longer run; the leases swept."""
    dead = [lease for lease in leases(settings) if not owner_alive(lease)]
    await release(settings, dead)
    return dead


async def release_own(settings: Settings) -> list[Lease]:
    """At the end of a run: delete everything leased to this process."""
    mine = [lease for lease in leases(settings) if lease.pid == os.getpid() and owner_alive(lease)]
    await release(settings, mine)
    return mine


async def release(settings: Settings, doomed: list[Lease]) -> None:
    """Delete the leases' topics and databases, then the leases; a database that cannot be dropped now
    (held by another role's session) keeps its lease, so the next sweep tries again."""
    if not doomed:
        return
    await delete_topics(settings, [lease.namespace for lease in doomed])
    done = [lease for lease in doomed if not lease.database]
    with_database = [lease for lease in doomed if lease.database]
    if with_database:
        admin = await asyncpg.connect(settings.pg_dsn.rsplit("/", 1)[0] + "/postgres")
        try:
            for lease in with_database:
                if not _THROWAWAY_DATABASE.match(lease.database or ""):
                    continue
                try:
                    await admin.execute(f'DROP DATABASE IF EXISTS "{lease.database}" WITH (FORCE)')
                except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                    continue
                done.append(lease)
        finally:
            await admin.close()
    for lease in done:
        (_ledger(settings) / f"{lease.namespace}.json").unlink(missing_ok=True)


async def delete_topics(settings: Settings, namespaces: list[str]) -> list[str]:
    """Delete every topic of these namespaces (``<namespace>.*``); the topics deleted."""
    prefixes = tuple(f"{ns}." for ns in namespaces if ns not in NEVER_SWEPT_NAMESPACES)
    if not prefixes:
        return []
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=30000)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if doomed:
            await admin.delete_topics(doomed, timeout_ms=30000)  # a topic gone meanwhile is no error here
        return doomed
    finally:
        await admin.close()


def lease_what_is_made(settings: Settings) -> None:
    """An ``infra.topics.namespace_observers`` entry: lease each throw-away namespace this process makes
    topics in (``ittai`` is never leased, so never swept)."""
    claim(settings)
