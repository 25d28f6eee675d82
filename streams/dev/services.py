"""`python -m streams.dev.services up|down|status`: broker and workers in the background.

Each process has a pid file and a log under `.local/`; `up` is idempotent and `down` leaves
nothing running.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from streams.dev.channels import simulator_command
from streams.dev.localkafka.broker import BrokerError, LocalBroker, alive, terminate

HOME = Path(".local")


@dataclass(frozen=True)
class Service:
    name: str
    command: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()

    @property
    def pid_file(self) -> Path:
        return HOME / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return HOME / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if alive(pid) else None

    def start(self) -> int:
        running = self.pid()
        if running is not None:
            return running
        HOME.mkdir(exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                self.command,
                env=os.environ | dict(self.environment),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            terminate(pid)
        self.pid_file.unlink(missing_ok=True)


def services(workers: int) -> list[Service]:
    ledger = str(Path(sys.executable).with_name("ledger"))
    simulator = Service("channels", tuple(simulator_command(8700)))
    gateway = Service("gateway", (ledger, "gateway"))
    reconciler = Service("reconciler", (ledger, "reconcile", "--every", "300"))
    workers_ = [
        # One transactional id per worker process (streams/worker/loop.py).
        Service(f"worker-{n}", (ledger, "worker"), (("LEDGER_INSTANCE_ID", f"worker-{n}"),))
        for n in range(1, workers + 1)
    ]
    return [simulator, *workers_, gateway, reconciler]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.services", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("LEDGER_WORKERS", "1")))
    args = parser.parse_args(argv)
    broker = LocalBroker(home=(HOME / "kafka").resolve())
    try:
        return _act(args.action, broker, services(args.workers))
    except BrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _act(action: str, broker: LocalBroker, processes: list[Service]) -> int:
    if action == "up":
        print(f"Kafka broker ready at {broker.up()}")
        subprocess.run(
            [str(Path(sys.executable).with_name("ledger")), "topics", "create"], check=True
        )
        for service in processes:
            print(f"{service.name}: pid {service.start()}, log {service.log_file}")
    elif action == "down":
        for service in processes:
            service.stop()
        broker.down()
        print("stopped workers and broker")
    else:
        for service in processes:
            pid = service.pid()
            print(f"{service.name}: {'running, pid ' + str(pid) if pid else 'stopped'}")
        return 0 if all(service.pid() for service in processes) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
