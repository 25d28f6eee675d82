"""The processes under test: workers (decider and projector), gateway, channel simulator.

Started as operators start them (`ledger worker`, `ledger gateway`, `ledger channels serve`),
configured through `LEDGER_*` variables, logs in the run's folder. A run's clock starts only
once the workers' consumer group is stable and one warm-up loan per partition went through.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import ConsumerGroupState, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from schemas.topics import COMMANDS
from streams.dev import LEDGER
from streams.dev.bench.corpus import Decided, covering, gateway_cycles, repayment_cycles
from streams.dev.bench.kafkaio import warm
from streams.dev.bench.tail import Tail, require
from streams.dev.channels import simulator_command
from streams.dev.channels.config import ChannelBehaviour, SimulatorConfig
from streams.dev.demo.scenario import wait_for_channels
from streams.dev.localkafka import free_port
from streams.errors import LedgerError
from streams.settings import LedgerSettings

GROUP_TIMEOUT_S = 120.0
WARM_UP_TIMEOUT_S = 180.0
# A worker ends a hung graceful stop itself after LEDGER_SHUTDOWN_GRACE_S (20 s).
STOP_TIMEOUT_S = 30.0


@dataclass
class Fleet:
    settings: LedgerSettings
    logs: Path
    guarantee: str
    profile: bool = False  # record the first worker with py-spy (stacks in the logs)
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    profiler: subprocess.Popen[bytes] | None = None

    def environment(self, data: str) -> dict[str, str]:
        return {
            "LEDGER_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "LEDGER_TOPIC_PREFIX": self.settings.topic_prefix,
            "LEDGER_PARTITIONS": str(self.settings.partitions),
            "LEDGER_PROCESSING_GUARANTEE": self.guarantee,
            "LEDGER_CHANNELS_URL": self.settings.channels_url,
            "LEDGER_INSTANCE_ID": data,
            "LEDGER_LOG_LEVEL": "warn",
        }

    def start(self, name: str, arguments: list[str], environment: dict[str, str]) -> None:
        command = arguments if arguments[0] == sys.executable else [*LEDGER, *arguments]
        with (self.logs / f"{name}.log").open("wb") as log:
            self.children[name] = subprocess.Popen(
                command, env=os.environ | environment, stdout=log, stderr=subprocess.STDOUT
            )
        if self.profile and name == "worker-1":
            self._attach_profiler(self.children[name].pid)

    def _attach_profiler(self, pid: int) -> None:
        """py-spy on the worker until it exits; then it writes collapsed stacks (flamegraph.pl
        and speedscope read them; `python -m streams.dev.bench.hotspots FILE` sums them up)."""
        spy = str(Path(sys.executable).with_name("py-spy"))
        stacks = str(self.logs / "worker-1.folded")
        command = [spy, "record", "--format", "raw", "-o", stacks, "--pid", str(pid)]
        with (self.logs / "profiler.log").open("wb") as log:
            self.profiler = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def start_workers(self, count: int) -> None:
        for n in range(1, count + 1):
            self.start(f"worker-{n}", ["worker"], self.environment(f"w{n}-data"))

    def start_gateway(self) -> None:
        """The channel simulator (every channel answers at once, always success), then the
        gateway pointed at it."""
        port = int(self.settings.channels_url.rsplit(":", 1)[1])
        config = self.logs / "channels.json"
        config.write_text(instant_channels().model_dump_json(indent=2))
        self.start("channels", simulator_command(port, config), {})
        wait_for_channels(self.settings.channels_url)
        self.start("gateway", ["gateway"], self.environment("gateway-data"))

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                raise LedgerError(f"{name} exited ({child.returncode}); see {self.logs}/{name}.log")

    def stop(self) -> None:
        """SIGTERM to all, then SIGKILL to whatever still runs after the workers' own grace."""
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.profiler is not None:  # it ends with the worker, once its stacks are written
            self.profiler.wait(timeout=STOP_TIMEOUT_S)

    def wait_for_group(self, members: int) -> None:
        """Until the workers' consumer group is stable with `members` members."""
        admin = AdminClient(self.settings.confluent_config())
        deadline = time.monotonic() + GROUP_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_alive()
            groups = self.settings.worker_groups
            if all(_group_members(admin, group) == members for group in groups):
                return
            time.sleep(0.5)
        raise LedgerError(f"groups {groups} not stable with {members} members")


def instant_channels() -> SimulatorConfig:
    """alpha and beta answer at once and always succeed: the ledger, not the channel, is timed."""
    return SimulatorConfig(
        seed=1, channels={"alpha": ChannelBehaviour(), "beta": ChannelBehaviour()}
    )


def _group_members(admin: AdminClient, group: str) -> int:
    try:
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except (KafkaException, TimeoutError):
        return -1  # not there yet (a fresh broker creates its offsets topic first)
    if described.state != ConsumerGroupState.STABLE:
        return -1
    return len(described.members)


@contextmanager
def fleet(
    settings: LedgerSettings,
    logs: Path,
    guarantee: str,
    workers: int,
    gateway: bool,
    profile: bool = False,
) -> Iterator[Fleet]:
    """Processes started and their group stable; all stopped on exit, whatever happens."""
    if gateway:
        settings = settings.model_copy(update={"channels_url": f"http://127.0.0.1:{free_port()}"})
    started = Fleet(settings, logs, guarantee, profile)
    try:
        started.start_workers(workers)
        if gateway:
            started.start_gateway()
        started.wait_for_group(workers)
        yield started
    finally:
        started.stop()


def warm_up(fleet: Fleet, tail: Tail, gateway: bool) -> None:
    """One loan per partition through the pipeline (a full cycle through the gateway when it
    runs), so every partition is assigned, recovered and flowing before the clock starts."""
    loans = covering(fleet.settings.partitions, "warm")
    cycles = gateway_cycles(loans, "warm") if gateway else repayment_cycles(loans, "warm")
    send(fleet.settings, cycles.sent)
    require(tail.wait_settled(cycles.events, WARM_UP_TIMEOUT_S, fleet.check_alive), "warm-up")


def send(settings: LedgerSettings, commands: list[Decided]) -> float:
    """Produce the commands (pre-encoded, the client's producer settings); return the seconds."""
    records = [(d.command.loan_id.encode(), d.command.model_dump_json().encode()) for d in commands]
    producer = Producer(settings.producer_config())
    topic = settings.topic(COMMANDS.name)
    warm(settings, producer, topic)
    started = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(60) > 0:
        raise LedgerError(f"commands to {topic} not acknowledged within 60 s")
    return time.perf_counter() - started
