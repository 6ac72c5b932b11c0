"""Local Apache Kafka (KRaft, combined broker+controller per node) run from Maven-resolved jars.

Layout under ``settings.stack_dir``::

    kafka-libs-<version>/        jar cache (kept by ``reset``), ``.complete`` marks a finished resolve
    kafka/cluster.json           cluster id and node count the data dirs were formatted for
    kafka/log4j2.properties      broker logging (WARN, plus the "Kafka Server started" line)
    kafka/node<N>/               server.properties, data/, kafka.log, kafka.pid
    kafka/secrets/               ``--secure`` only: CA, broker key, users' passwords (``devtools.stack.secure``)

Node n's broker listens on ``kafka_port_base + 100*(n-1)``, its controller on that + 1.
This module also holds the small process helpers (lock, pid checks) that ``postgres`` shares.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devtools.stack import secure as security
from infra.config import get_settings

HOST = "127.0.0.1"
READY_TIMEOUT_S = 120.0  # a cap, not a delay: a loaded 2-core machine can take over a minute
STOP_TIMEOUT_S = 20.0
POM = Path(__file__).with_name("kafka-pom.xml")
LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""


class StackError(RuntimeError):
    """A one-line, user-facing reason the local stack cannot be brought up or down."""


# --------------------------------------------------------------------------------------------------
# Shared process helpers
# --------------------------------------------------------------------------------------------------
_lock_depth = 0
_children: dict[int, subprocess.Popen[bytes]] = {}  # keeps Popen objects alive so we can reap them


@contextlib.contextmanager
def stack_lock() -> Iterator[None]:
    """Serialize stack operations across processes (e.g. parallel test workers); re-entrant."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    stack_dir = get_settings().stack_dir
    stack_dir.mkdir(parents=True, exist_ok=True)
    stack_dir.chmod(0o755)  # the PostgreSQL OS user must be able to traverse it
    with open(stack_dir / "stack.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0
            fcntl.flock(fh, fcntl.LOCK_UN)


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, must_contain: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, if given, its command line contains ``must_contain``."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return must_contain is None or must_contain in cmdline


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def terminate(procs: dict[int, str | None], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every pid at once, wait up to ``timeout``, then SIGKILL those still alive.

    ``procs`` maps a pid to a string its command line must contain (guards against pid reuse)."""

    live = {p: m for p, m in procs.items() if pid_alive(p, m)}
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        live = {p: m for p, m in live.items() if pid_alive(p, m)}
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = {p: m for p, m in live.items() if pid_alive(p, m)}


# --------------------------------------------------------------------------------------------------
# Paths, ports and prerequisites
# --------------------------------------------------------------------------------------------------
def kafka_root() -> Path:
    return get_settings().stack_dir / "kafka"


def node_dir(n: int) -> Path:
    return kafka_root() / f"node{n}"


def libs_dir() -> Path:
    s = get_settings()
    return s.stack_dir / f"kafka-libs-{s.kafka_version}"


def broker_port(n: int) -> int:
    return get_settings().kafka_port_base + 100 * (n - 1)


def controller_port(n: int) -> int:
    return broker_port(n) + 1


def formatted_nodes() -> int | None:
    """Node count the data dirs were formatted for, or None if Kafka was never set up."""
    try:
        return int(json.loads((kafka_root() / "cluster.json").read_text())["nodes"])
    except (OSError, ValueError, KeyError):
        return None


def formatted_secure() -> bool:
    """Kafka was set up with ``--secure`` (SASL_SSL, ACLs)."""
    try:
        return bool(json.loads((kafka_root() / "cluster.json").read_text()).get("secure"))
    except (OSError, ValueError, AttributeError):
        return False


def _resolve_nodes(nodes: int | None) -> int:
    return nodes if nodes is not None else (formatted_nodes() or 1)


def kafka_bootstrap(nodes: int | None = None) -> str:
    """Comma-separated bootstrap servers for the cluster (default: the node count set up, else 1)."""
    return ",".join(f"{HOST}:{broker_port(n)}" for n in range(1, _resolve_nodes(nodes) + 1))


def java_bin() -> str:
    """Path of a Java 17+ ``java``; raises StackError naming what to install otherwise."""
    hint = "Java 17+ not found: install it with `apt-get install openjdk-17-jre-headless`"
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else None
    java = java or shutil.which("java")
    if not java:
        raise StackError(hint)
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        raise StackError(hint)
    major = int(m.group(2)) if m.group(1) == "1" else int(m.group(1))
    if major < 17:
        raise StackError(f"Java {major} found but Kafka 4.x needs 17+: {hint.split(': ', 1)[1]}")
    return java


def ensure_libs() -> Path:
    """Resolve the broker jars into ``kafka-libs-<version>/`` once (marker file), never mixing versions."""
    target = libs_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven not found (needed once to fetch the Kafka jars): `apt-get install maven`")
    version = get_settings().kafka_version
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    cmd = [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime"]
    cmd += [f"-DoutputDirectory={tmp}", f"-Dkafka.version={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (tmp / f"kafka_2.13-{version}.jar").exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise StackError(f"Resolving Kafka {version} jars with Maven failed: {' | '.join(tail)}")
    tmp.rename(target)
    marker.write_text(f"kafka_2.13 {version}\n")
    return target


# --------------------------------------------------------------------------------------------------
# Configuration and formatting
# --------------------------------------------------------------------------------------------------
def _kafka_uuid() -> str:
    while True:
        s = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not s.startswith("-"):
            return s


def _server_properties(n: int, nodes: int, secrets: security.Secrets | None = None) -> str:
    rf, isr = (1, 1) if nodes == 1 else (3, 2)
    voters = ",".join(f"{HOST}:{controller_port(i)}" for i in range(1, nodes + 1))
    listeners = f"PLAINTEXT://{HOST}:{broker_port(n)},CONTROLLER://{HOST}:{controller_port(n)}"
    props = {
        "process.roles": "broker,controller",
        "node.id": n,
        "controller.quorum.bootstrap.servers": voters,
        "listeners": listeners,
        "advertised.listeners": listeners,
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": node_dir(n) / "data",
        "num.partitions": 1,
        "group.initial.rebalance.delay.ms": 0,
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
    }
    if secrets is not None:
        props |= security.server_properties(broker_port(n), controller_port(n), secrets)
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _prepare(nodes: int, java: str, libs: Path, secure: bool = False) -> None:
    """Write configs and format data dirs that are not formatted yet (formats run in parallel).

    ``secure`` applies to a fresh set-up only; an existing one keeps what it was formatted with."""
    root = kafka_root()
    root.mkdir(parents=True, exist_ok=True)
    (root / "log4j2.properties").write_text(LOG4J2)
    state_file = root / "cluster.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
    else:
        state = {
            "cluster_id": _kafka_uuid(),
            "nodes": nodes,
            "dir_ids": [_kafka_uuid() for _ in range(nodes)],
            "secure": secure,
        }
        state_file.write_text(json.dumps(state, indent=2) + "\n")
    secrets = security.ensure_secrets(root) if state.get("secure") else None
    formats: list[tuple[int, subprocess.Popen[str]]] = []
    for n in range(1, nodes + 1):
        d = node_dir(n)
        (d / "data").mkdir(parents=True, exist_ok=True)
        props = d / "server.properties"
        props.touch(mode=0o600)  # a secure node's holds the admin password
        props.write_text(_server_properties(n, nodes, secrets))
        if (d / "data" / "meta.properties").exists():
            continue
        cmd = [
            java,
            "-Xmx256m",
            "-cp",
            f"{libs}/*",
            f"-Dlog4j2.configurationFile={root / 'log4j2.properties'}",
        ]
        cmd += ["kafka.tools.StorageTool", "format", "-t", state["cluster_id"]]
        cmd += ["-c", str(d / "server.properties"), "--ignore-formatted"]
        if nodes == 1:
            cmd.append("--standalone")
        else:
            ids = state["dir_ids"]
            controllers = ",".join(
                f"{i}@{HOST}:{controller_port(i)}:{ids[i - 1]}" for i in range(1, nodes + 1)
            )
            cmd += ["--initial-controllers", controllers]
        if secrets is not None:
            cmd += security.format_args(secrets)
        popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        formats.append((n, popen))
    for n, popen in formats:
        out, _ = popen.communicate()
        if popen.returncode != 0:
            raise StackError(f"Formatting Kafka node {n} failed: {out.strip().splitlines()[-1:]}")


# --------------------------------------------------------------------------------------------------
# Health: a minimal Metadata v4 request over a plain socket (no client library, a few ms)
# --------------------------------------------------------------------------------------------------
def recv_exact(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock`` (raises OSError where the peer closes first)."""
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def broker_ids(n: int, timeout: float = 1.0) -> set[int] | None:
    """Broker ids that node ``n`` reports in a metadata response, or None if it does not answer."""
    client_id = b"hub-stack"
    body = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    try:
        with socket.create_connection((HOST, broker_port(n)), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", recv_exact(sock, 4))
            data = recv_exact(sock, size)
    except (OSError, struct.error):
        return None
    try:
        correlation, _throttle, count = struct.unpack_from(">iii", data, 0)
        pos, ids = 12, set()
        for _ in range(count):
            node_id, host_len = struct.unpack_from(">ih", data, pos)
            pos += 6 + host_len + 4
            (rack_len,) = struct.unpack_from(">h", data, pos)
            pos += 2 + max(rack_len, 0)
            ids.add(node_id)
    except struct.error:
        return None
    return ids if correlation == 1 else None


def _marker(n: int) -> str:
    return str(node_dir(n) / "server.properties")


def node_pid(n: int) -> int | None:
    pid = read_pid(node_dir(n) / "kafka.pid")
    return pid if pid is not None and pid_alive(pid, _marker(n)) else None


def node_ready(n: int, nodes: int | None = None) -> bool:
    """Node ``n`` runs, answers metadata and (if ``nodes`` given) sees brokers 1..nodes.

    A secure node answers nothing but ApiVersions before SASL: it is ready when it answers that over
    TLS with the stack's certificate."""
    if formatted_secure():
        cafile = security.secrets_dir(kafka_root()) / "ca.pem"
        return node_pid(n) is not None and security.answers(broker_port(n), cafile)
    ids = broker_ids(n) if node_pid(n) else None
    if ids is None:
        return False
    return nodes is None or ids >= set(range(1, nodes + 1))


def is_kafka_up(nodes: int | None = None) -> bool:
    """Every node of the cluster (default: the node count set up, else 1) runs and sees all brokers."""
    count = _resolve_nodes(nodes)
    if formatted_nodes() not in (None, count):
        return False
    return all(node_ready(n, count) for n in range(1, count + 1))


def _wait_ready(ns: list[int], nodes: int | None, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ns)
    while pending:
        for n in list(pending):
            if node_pid(n) is None:
                log = node_dir(n) / "kafka.log"
                raise StackError(f"Kafka node {n} exited during startup; see {log}:\n{log_tail(log)}")
            if node_ready(n, nodes):
                pending.remove(n)
        if pending and time.monotonic() > deadline:
            raise StackError(f"Kafka node(s) {pending} not ready after {timeout:.0f} s; see {kafka_root()}")
        if pending:
            time.sleep(0.2)


# --------------------------------------------------------------------------------------------------
# Start / stop
# --------------------------------------------------------------------------------------------------
def _spawn(n: int, java: str, libs: Path) -> None:
    d = node_dir(n)
    heap = get_settings().kafka_heap_opts.split()
    cmd = [java, *heap, "-XX:+ExitOnOutOfMemoryError", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
    cmd += ["-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={kafka_root() / 'log4j2.properties'}"]
    cmd += ["kafka.Kafka", str(d / "server.properties")]
    with open(d / "kafka.log", "ab") as log:
        log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting node {n}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, cwd=d, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    _children[proc.pid] = proc
    (d / "kafka.pid").write_text(f"{proc.pid}\n")


def _check_layout(nodes: int, secure: bool | None, recreate: bool) -> None:
    existing = formatted_nodes()
    if existing is None or (existing == nodes and secure in (None, formatted_secure())):
        return
    if not recreate:
        was = f"{existing} node(s){' (secure)' if formatted_secure() else ''}"
        want = f"{nodes} node(s){' (secure)' if secure else ''}"
        flags = f"--nodes {nodes}{' --secure' if secure else ''}"
        raise StackError(
            f"Kafka is set up for {was}, not {want}: run `hub stack reset` first "
            f"(or `hub stack up {flags} --recreate` to wipe only Kafka)"
        )
    kafka_down()
    shutil.rmtree(kafka_root(), ignore_errors=True)


def kafka_start(nodes: int | None = None, *, recreate: bool = False, secure: bool | None = None) -> list[int]:
    """Spawn the nodes that are not running (formatting fresh dirs); returns the nodes spawned.

    ``secure``: SASL_SSL and ACLs (``devtools.stack.secure``); None keeps what is set up (plain if
    nothing is). Does not wait; call ``kafka_wait`` (``kafka_ensure_up`` does both)."""
    count = _resolve_nodes(nodes)
    if count not in (1, 3):
        raise StackError(f"--nodes must be 1 or 3, not {count}")
    with stack_lock():
        _check_layout(count, secure, recreate)
        missing = [n for n in range(1, count + 1) if node_pid(n) is None]
        if not missing:
            return []
        java = java_bin()
        libs = ensure_libs()
        _prepare(count, java, libs, bool(secure))
        for n in missing:
            _spawn(n, java, libs)
        return missing


def kafka_wait(nodes: int | None = None, timeout: float = READY_TIMEOUT_S) -> None:
    count = _resolve_nodes(nodes)
    _wait_ready(list(range(1, count + 1)), count, timeout)


def kafka_ensure_up(nodes: int | None = None, *, recreate: bool = False) -> None:
    kafka_start(nodes, recreate=recreate)
    kafka_wait(nodes)


def kafka_stop_node(n: int, timeout: float = STOP_TIMEOUT_S, *, kill: bool = False) -> None:
    """Stop one broker: SIGTERM, then SIGKILL after ``timeout`` seconds. No-op if it is not running.

    ``kill=True`` sends SIGKILL at once (a crash). Note: after a crash the restarted node waits for the
    old registration's session to expire (broker.session.timeout.ms, 9 s) before it serves."""
    with stack_lock():
        pid = node_pid(n)
        if pid is not None:
            if kill:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            terminate({pid: _marker(n)}, 0 if kill else timeout)
        (node_dir(n) / "kafka.pid").unlink(missing_ok=True)


def kafka_start_node(n: int, timeout: float = READY_TIMEOUT_S) -> None:
    """Start one (stopped) broker of the existing cluster and wait until it answers metadata."""
    count = formatted_nodes()
    if count is None or not 1 <= n <= count:
        raise StackError(f"Kafka node {n} is not part of the cluster set up ({count or 0} node(s))")
    with stack_lock():
        if node_pid(n) is None:
            java = java_bin()
            libs = ensure_libs()
            _prepare(count, java, libs)
            _spawn(n, java, libs)
    _wait_ready([n], None, timeout)


def kafka_down() -> None:
    """Stop every node at once (SIGTERM, SIGKILL after ~20 s). Idempotent."""
    with stack_lock():
        root = kafka_root()
        dirs = sorted(root.glob("node*")) if root.exists() else []
        ns = [int(d.name[4:]) for d in dirs if d.name[4:].isdigit()]
        terminate({pid: _marker(n) for n in ns if (pid := node_pid(n)) is not None})
        for n in ns:
            (node_dir(n) / "kafka.pid").unlink(missing_ok=True)


def kafka_reset() -> None:
    """Stop Kafka and delete its configs and data (the jar cache is kept)."""
    with stack_lock():
        kafka_down()
        shutil.rmtree(kafka_root(), ignore_errors=True)


@dataclass(frozen=True)
class NodeStatus:
    node: int
    pid: int | None
    ready: bool
    address: str
    controller: str


def kafka_status() -> list[NodeStatus]:
    count = formatted_nodes() or 1
    return [
        NodeStatus(n, node_pid(n), node_ready(n), f"{HOST}:{broker_port(n)}", f"{HOST}:{controller_port(n)}")
        for n in range(1, count + 1)
    ]
