"""The local development stack: Apache Kafka (KRaft) from Maven jars and PostgreSQL, all under ``.stack``.

Synchronous, subprocess-based API used by ``hub stack ...``, the tests and the fault tests::

    ensure_up(nodes=None)      # idempotent; None = the node count already set up, else 1
    ensure_up(secure=True)     # SASL_SSL + ACLs (devtools.stack.secure); use a stack dir of its own
    down() / reset()           # stop everything / stop and delete data (jar cache kept)
    kafka_bootstrap(nodes=None) -> "127.0.0.1:19092[,...]"
    kafka_stop_node(n) / kafka_start_node(n)
    is_kafka_up(nodes=None) / is_pg_up()
"""

from __future__ import annotations

from devtools.stack.kafka import (
    StackError,
    formatted_nodes,
    formatted_secure,
    is_kafka_up,
    kafka_bootstrap,
    kafka_down,
    kafka_ensure_up,
    kafka_reset,
    kafka_root,
    kafka_start,
    kafka_start_node,
    kafka_status,
    kafka_stop_node,
    kafka_wait,
    stack_lock,
)
from devtools.stack.postgres import is_pg_up, pg_check, pg_down, pg_ensure_up, pg_kill, pg_reset, pg_restart
from devtools.stack.secure import apply_acls_now
from infra.config import LOCAL_STACK_MARKER, get_settings

__all__ = [
    "StackError",
    "down",
    "ensure_up",
    "formatted_nodes",
    "formatted_secure",
    "is_kafka_up",
    "is_pg_up",
    "is_up",
    "kafka_bootstrap",
    "kafka_down",
    "kafka_ensure_up",
    "kafka_reset",
    "kafka_start_node",
    "kafka_status",
    "kafka_stop_node",
    "mark_local_development",
    "pg_down",
    "pg_ensure_up",
    "pg_kill",
    "pg_reset",
    "pg_restart",
    "reset",
]


def is_up(nodes: int | None = None) -> bool:
    return is_kafka_up(nodes) and is_pg_up()


def ensure_up(nodes: int | None = None, *, recreate: bool = False, secure: bool | None = None) -> None:
    """Bring Kafka (``nodes`` = 1 or 3) and PostgreSQL up and wait until both answer. Idempotent.

    ``nodes=None`` keeps the node count already set up (1 on a fresh checkout). Asking for a different
    count than the one formatted raises StackError unless ``recreate=True`` (wipes Kafka data only).
    Kafka brokers boot while PostgreSQL starts, so a cold start costs max(kafka, pg), not the sum.

    ``secure=True`` sets Kafka up with SASL_SSL, users and the StandardAuthorizer (None: as set up), and
    every call (re)creates the ACLs for the topic namespace in the settings."""
    mark_local_development()
    if not (is_up(nodes) and secure in (None, formatted_secure())):
        with stack_lock():
            pg_check()  # fail on a missing prerequisite before starting anything
            kafka_start(nodes, recreate=recreate, secure=secure)
            pg_ensure_up()
            kafka_wait(nodes)
    if formatted_secure():  # the settings may predate the set-up: the stack knows where its brokers are
        apply_acls_now(get_settings().model_copy(update={"kafka_bootstrap": kafka_bootstrap()}), kafka_root())


def mark_local_development() -> None:
    """This machine runs the local stack: services here may use its public defaults (demo master key,
    default database password). Production has no stack directory, so no marker."""
    settings = get_settings()
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / LOCAL_STACK_MARKER).write_text(
        "Written by `hub stack up`: services on this machine accept the local stack's public defaults.\n"
    )


def down() -> None:
    """Stop Kafka (SIGTERM all nodes, SIGKILL after ~20 s) and PostgreSQL. Idempotent."""
    with stack_lock():
        kafka_down()
        pg_down()


def reset() -> None:
    """``down`` and delete Kafka and PostgreSQL data, keeping the jar cache, so the next ``up`` is fresh."""
    with stack_lock():
        kafka_reset()
        pg_reset()
