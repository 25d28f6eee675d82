"""Fetch Kafka's jars with Maven, format KRaft storage, start, wait until ready, and stop."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka.admin import AdminClient

KAFKA_VERSION = "3.9.2"
# Maven 3.8's default dependency plugin predates `includeScope` fixes; pin a recent one.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
POM = Path(__file__).with_name("pom.xml")
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says what to do."""


def default_jar_home() -> Path:
    """Jars live in a per-user cache so that every clone (and every CI run) reuses them."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "repayment-ledger" / f"kafka-{KAFKA_VERSION}"


def fetch_jars(jar_home: Path | None = None) -> Path:
    """Resolve the broker's runtime jars into `jar_home/libs` once; later calls return at once."""
    libs = (jar_home or default_jar_home()) / "libs"
    complete = libs / ".complete"
    if complete.exists():
        return libs
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise BrokerError(
            "the local Kafka broker needs a JDK 17+ and Maven on PATH "
            "(or set KAFKA_BOOTSTRAP_SERVERS to an existing broker, or use Docker)"
        )
    staging = libs.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        "mvn", "-B", "-q", "-f", str(POM),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"Maven could not fetch Kafka {KAFKA_VERSION}:\n{result.stdout[-4000:]}")
    # Rename last, so an interrupted download is never mistaken for a complete one.
    shutil.rmtree(libs, ignore_errors=True)
    staging.rename(libs)
    complete.write_text(KAFKA_VERSION)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def new_cluster_id() -> str:
    # Kafka's Uuid.toString(): URL-safe base64 of 16 random bytes, without padding. Like
    # Kafka's Uuid.randomUuid(), never one starting with "-": the storage tool would read it as
    # an option and refuse to format (seen once in ~30 starts).
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


@dataclass(frozen=True)
class SecureListener:
    """A SASL_SSL listener (SCRAM-SHA-512 over TLS) beside PLAINTEXT, with ACLs enforced.

    PLAINTEXT and the controller stay for the operator on this machine: their principal,
    ANONYMOUS, is the super user that creates topics, users' ACLs and so on. Every other
    principal gets only what an ACL grants it. The SCRAM users are created when the storage is
    formatted, so the broker must start on a fresh `home`.
    """

    port: int
    keystore: Path  # PKCS12 holding the broker's key and certificate
    keystore_password: str
    users: tuple[tuple[str, str], ...]  # (name, password)

    def amend(self, properties: str, port: int, controller_port: int) -> str:
        secure = f"SASL_SSL://127.0.0.1:{self.port}"
        listeners = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        properties = (
            properties.replace(f"listeners={listeners}\n", f"listeners={listeners},{secure}\n")
            .replace(
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},{secure}\n",
            )
            .replace(
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                "SASL_SSL:SASL_SSL\n",
            )
        )
        prefix = "listener.name.sasl_ssl"
        return properties + "\n".join(
            (
                "sasl.enabled.mechanisms=SCRAM-SHA-512",
                f"{prefix}.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                f"{prefix}.ssl.keystore.type=PKCS12",
                f"{prefix}.ssl.keystore.location={self.keystore}",
                f"{prefix}.ssl.keystore.password={self.keystore_password}",
                f"{prefix}.ssl.key.password={self.keystore_password}",
                "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users=User:ANONYMOUS",
                "allow.everyone.if.no.acl.found=false",
                "",
            )
        )

    def scram_arguments(self) -> list[str]:
        return [
            argument
            for name, password in self.users
            for argument in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]


@dataclass(frozen=True)
class LocalBroker:
    """One combined broker+controller on 127.0.0.1 whose files all live under `home`."""

    home: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    jar_home: Path | None = None
    secure: SecureListener | None = None
    # Membership of a multi-node cluster (streams/dev/localkafka/cluster.py); the defaults make a
    # cluster of one.
    node_id: int = 1
    voters: str | None = None  # controller.quorum.voters; default: this node alone
    replication: int = 1  # internal topics' and new topics' replication factor
    cluster_id: str | None = None  # every node of a cluster is formatted with the same id

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    def up(self) -> str:
        """Start the broker unless it already runs; return its bootstrap address once ready."""
        if self.running_pid() is not None and self.is_ready(timeout_s=5.0):
            return self.bootstrap
        self.start()
        self.wait_ready()
        return self.bootstrap

    def start(self) -> None:
        """Format the storage if new, and launch the process; does not wait for readiness
        (a cluster's nodes become ready only once a quorum of them runs)."""
        self.down()
        libs = fetch_jars(self.jar_home)
        self.home.mkdir(parents=True, exist_ok=True)
        properties = self._write_configs()
        self._format_storage(libs, properties)
        self._launch(libs, properties)

    def kill(self) -> None:
        """SIGKILL, as a crash: no controlled shutdown, no flush."""
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def down(self) -> None:
        """Stop the broker (TERM, then KILL after a grace period); harmless when not running."""
        pid = self.running_pid()
        if pid is not None:
            terminate(pid)
        self.pid_file.unlink(missing_ok=True)

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if alive(pid) else None

    def is_ready(self, timeout_s: float = 2.0) -> bool:
        return broker_answers(self.bootstrap, timeout_s)

    @property
    def secure_bootstrap(self) -> str:
        assert self.secure is not None, "this broker has no SASL_SSL listener"
        return f"127.0.0.1:{self.secure.port}"

    def _write_configs(self) -> Path:
        data = self.home / "data"
        properties = self.home / "server.properties"
        text = _SERVER_PROPERTIES.format(
            port=self.port,
            controller_port=self.controller_port,
            data=data,
            node_id=self.node_id,
            voters=self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            replication=self.replication,
            # Under replication 3, an acked write is on 2 replicas at least (acks=all).
            min_isr=min(self.replication, 2),
        )
        if self.secure is not None:
            text = self.secure.amend(text, self.port, self.controller_port)
        properties.write_text(text)
        (self.home / "log4j.properties").write_text(_LOG4J_PROPERTIES)
        return properties

    def _format_storage(self, libs: Path, properties: Path) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        command = [
            "java", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format",
            "-t", self.cluster_id or new_cluster_id(), "-c", str(properties), "--ignore-formatted",
            *(self.secure.scram_arguments() if self.secure is not None else ()),
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def _launch(self, libs: Path, properties: Path) -> None:
        command = [
            "java", f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp", f"{libs}/*", "kafka.Kafka", str(properties),
        ]  # fmt: skip
        with self.log_file.open("ab") as log:
            # A session of its own: the broker outlives `make kafka-up` and ignores our Ctrl-C.
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid_file.write_text(str(process.pid))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.running_pid() is None:
                raise BrokerError(f"the broker exited during start-up:\n{self._log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.5)
        self.down()
        raise BrokerError(f"the broker was not ready after {READY_TIMEOUT_S}s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no broker log)"


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Ready means the admin API answers with a broker in the metadata, not an open port."""
    # log_level 0: "connection refused" while a broker boots is expected, not worth a line.
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except Exception:  # any failure just means "not ready yet"
        return False
    return len(metadata.brokers) > 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return reaped == 0


def terminate(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    while alive(pid):
        time.sleep(0.1)


_SERVER_PROPERTIES = """\
# Written by streams.dev.localkafka; edits are overwritten at the next start.
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
# Internal topics cannot have more replicas than there are brokers, or transactions never start.
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=10
default.replication.factor={replication}
min.insync.replicas={min_isr}
unclean.leader.election.enable=false
num.partitions=1
# Tests and the demo start consumers right away; waiting 3 s for more members buys nothing here.
group.initial.rebalance.delay.ms=0
# Topics are created explicitly with their contract configs; a typo must not create one.
auto.create.topics.enable=false
"""

_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.controller=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""
