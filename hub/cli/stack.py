"""``hub stack up | status | down | reset``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated

import typer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from devtools import stack
from devtools.stack import cluster, namespaces, postgres
from devtools.stack import secure as secure_stack
from hub.cli.options import whole_argument, whole_option
from infra.config import get_settings
from infra.kafka import KafkaSecurityMisconfigured

stack_app = typer.Typer(no_args_is_help=True, add_completion=False)
pg_app = typer.Typer(no_args_is_help=True, add_completion=False)
node_app = typer.Typer(no_args_is_help=True, add_completion=False)
stack_app.add_typer(node_app, name="node", help="One Kafka node of the cluster: stop, start, kill")
stack_app.add_typer(pg_app, name="pg", help="The stack's PostgreSQL alone: up, down, restart, kill")
out = Console()
err = Console(stderr=True)


def _fail(exc: Exception) -> typer.Exit:
    err.print(str(exc), style="bold red", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _table() -> tuple[Table, bool]:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("service", "state", "pid", "address"):
        table.add_column(col)
    all_up = True
    for node in stack.kafka_status():
        state = "up" if node.ready else ("starting/unhealthy" if node.pid else "stopped")
        all_up &= node.ready
        colour = "green" if node.ready else "red"
        addr = f"{node.address} (controller {node.controller})"
        table.add_row(f"kafka node {node.node}", f"[{colour}]{state}[/]", str(node.pid or "-"), addr)
    pg_pid = postgres.pg_pid()
    pg_up = stack.is_pg_up()
    all_up &= pg_up
    state = "[green]up[/]" if pg_up else ("[red]not accepting[/]" if pg_pid else "[red]stopped[/]")
    table.add_row("postgresql", state, str(pg_pid or "-"), postgres.pg_address())
    return table, all_up


@stack_app.command()
def up(
    nodes: Annotated[
        int | None,
        whole_option("--nodes", "-n", lo=1, hi=3, help="Kafka nodes: 1 or 3 (default: as set up, else 1)"),
    ] = None,
    recreate: Annotated[
        bool,
        typer.Option(
            help="If Kafka is set up for another node count or security, wipe Kafka data and reformat"
        ),
    ] = False,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="SASL_SSL (SCRAM-SHA-512, a local CA), one user per service and ACLs; give it a stack "
            "of its own (HUB_STACK_DIR, HUB_KAFKA_PORT_BASE, HUB_PG_PORT)",
        ),
    ] = False,
) -> None:
    """Start Kafka (KRaft) and PostgreSQL under .stack; idempotent."""
    if nodes not in (None, 1, 3):
        raise _fail(ValueError("--nodes must be 1 or 3"))
    started = time.monotonic()
    try:
        with out.status("Starting Kafka and PostgreSQL (first run resolves the Kafka jars)…"):
            stack.ensure_up(nodes, recreate=recreate, secure=secure or None)
    except (stack.StackError, KafkaError, OSError, RuntimeError) as exc:
        raise _fail(exc) from None
    out.print(f"[green]Stack up[/] in {time.monotonic() - started:.1f} s.")
    table, _ = _table()
    out.print(table)
    out.print(f"kafka bootstrap: {stack.kafka_bootstrap(nodes)}", soft_wrap=True)
    out.print(f"postgres dsn:    {get_settings().pg_dsn}", soft_wrap=True)
    if stack.formatted_secure():
        folder = secure_stack.secrets_dir(stack.kafka_root())
        out.print(
            f"kafka security:  SASL_SSL, SCRAM-SHA-512, ACLs for namespace {get_settings().topic_namespace}; "
            f"each service runs as its own user: `set -a; . {folder}/<user>.env` "
            f"(users: {', '.join(secure_stack.USERS)}; admin for `hub topics ensure`)",
            soft_wrap=True,
        )
    _warn_disagreements()


def _warn_disagreements() -> None:
    get_settings.cache_clear()  # the cluster may have just been formatted: settings follow it
    for problem in cluster.disagreements(get_settings()):
        err.print(f"warning: {problem}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _topics_table(every: bool) -> tuple[Table | None, bool]:
    settings = get_settings()
    prefix = "" if every else f"{settings.topic_namespace}."
    try:
        health = asyncio.run(asyncio.wait_for(cluster.topic_health(settings, prefix=prefix), timeout=20))
    except (KafkaError, OSError, TimeoutError) as exc:
        err.print(f"topics: cluster not reachable ({type(exc).__name__})", style="red", markup=False)
        return None, False
    except KafkaSecurityMisconfigured as exc:
        err.print(f"topics: {exc}", style="red", markup=False)
        return None, False
    table = Table(show_edge=False, pad_edge=False)
    for col in ("topic", "partitions", "rf", "min isr", "under-replicated", "offline", "accepts writes"):
        table.add_column(col)
    for t in health:
        writes = "[green]yes[/]" if t.accepts_writes else "[red]no[/]"
        table.add_row(
            t.topic, str(t.partitions), str(t.replication_factor), str(t.min_insync),
            str(t.under_replicated), str(t.offline), writes,
        )  # fmt: skip
    return table, all(t.accepts_writes for t in health)


@stack_app.command()
def status(
    every: Annotated[bool, typer.Option("--all", help="Every topic, not only the hub's namespace")] = False,
) -> None:
    """Each Kafka node and PostgreSQL, the active controller, and per topic: under-replicated and offline
    partitions and whether it accepts writes. Exit code 0 only if every node is up and every topic
    accepts writes."""
    table, all_up = _table()
    out.print(table)
    if any(node.pid for node in stack.kafka_status()):
        if stack.formatted_secure():  # DescribeQuorum needs SASL, which the raw probe does not speak
            out.print("active controller: (not asked on a secure stack)")
        else:
            controller = cluster.active_controller()
            out.print(
                f"active controller: {f'node {controller}' if controller else '[red]none (no quorum)[/]'}"
            )
        topics, writable = _topics_table(every)
        if topics is not None:
            out.print(topics)
        all_up &= writable
    _warn_disagreements()
    if not all_up:
        raise typer.Exit(1)


@stack_app.command()
def down() -> None:
    """Stop Kafka and PostgreSQL (data kept); idempotent."""
    try:
        with out.status("Stopping…"):
            stack.down()
    except stack.StackError as exc:
        raise _fail(exc) from None
    out.print("Stack stopped.")


@stack_app.command()
def sweep() -> None:
    """Delete the topic namespaces and databases leased to test sessions and benches that no longer run
    (`.stack/namespaces/`); a session or bench does this when it starts. Nothing unleased is touched."""
    swept = asyncio.run(namespaces.sweep(get_settings()))
    for lease in swept:
        made = f", database {lease.database}" if lease.database else ""
        out.print(f"swept {lease.namespace}.* (process {lease.pid}, made {lease.created}{made})")
    out.print(f"{len(swept)} namespace(s) of finished runs swept.")


@stack_app.command()
def reset() -> None:
    """Stop everything and delete Kafka and PostgreSQL data (the Kafka jar cache is kept)."""
    try:
        with out.status("Stopping and deleting data…"):
            stack.reset()
    except stack.StackError as exc:
        raise _fail(exc) from None
    out.print("Stack reset: next `hub stack up` starts fresh.")


def _act(action: Callable[[], None], message: Callable[[], str]) -> None:
    try:
        action()
    except stack.StackError as exc:
        raise _fail(exc) from None
    out.print(message())


def _pg_action(action: Callable[[], None], done: str) -> None:
    _act(action, lambda: f"PostgreSQL {done} ({postgres.pg_address()}).")


@pg_app.command("up")
def pg_up() -> None:
    """Start PostgreSQL only (initdb on first use); idempotent."""
    _pg_action(postgres.pg_ensure_up, "up")


@pg_app.command("down")
def pg_down() -> None:
    """Stop PostgreSQL (fast shutdown: sessions end, data kept)."""
    _pg_action(postgres.pg_down, "stopped")


@pg_app.command("restart")
def pg_restart() -> None:
    """Restart PostgreSQL (fast): every client session ends, as in a real database restart."""
    _pg_action(postgres.pg_restart, "restarted")


@pg_app.command("kill")
def pg_kill() -> None:
    """SIGKILL the postmaster (a crash); `hub stack pg up` recovers it."""
    _pg_action(postgres.pg_kill, "killed")


Node = Annotated[int, whole_argument(lo=1, hi=3, help="Node number (1..nodes set up)")]


def _node_action(n: int, action: Callable[[], None], done: str) -> None:
    count = stack.formatted_nodes()
    if count is None or n > count:
        raise _fail(
            stack.StackError(f"Kafka node {n} is not part of the cluster set up ({count or 0} node(s))")
        )
    _act(action, lambda: f"Kafka node {n} {done}.")


@node_app.command("stop")
def node_stop(n: Node) -> None:
    """Stop node N cleanly (SIGTERM: controlled shutdown, leadership moves first)."""
    _node_action(n, lambda: stack.kafka_stop_node(n), "stopped")


@node_app.command("kill")
def node_kill(n: Node) -> None:
    """SIGKILL node N (a crash: no controlled shutdown)."""
    _node_action(n, lambda: stack.kafka_stop_node(n, kill=True), "killed")


@node_app.command("start")
def node_start(n: Node) -> None:
    """Start node N again and wait until it answers metadata."""
    _node_action(n, lambda: stack.kafka_start_node(n), "started")
