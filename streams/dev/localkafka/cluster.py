"""A local three-node KRaft cluster: each node a combined broker and controller on 127.0.0.1.

Replication factor 3 and `min.insync.replicas` 2 for every topic, internal ones included, so
one node can die (SIGKILL) without losing an acknowledged write (acks=all) or availability.
`python -m streams.dev.localkafka.cluster up|down|status [--home .local/cluster]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from streams.dev.localkafka.broker import READY_TIMEOUT_S, BrokerError, LocalBroker, new_cluster_id

DEFAULT_PORTS = ((9192, 9193), (9194, 9195), (9196, 9197))  # (client, controller) per node


@dataclass(frozen=True)
class LocalCluster:
    home: Path
    ports: tuple[tuple[int, int], ...] = DEFAULT_PORTS
    heap: str = "384m"
    nodes: tuple[LocalBroker, ...] = field(init=False)

    def __post_init__(self) -> None:
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            id_file.write_text(new_cluster_id())
        cluster_id = id_file.read_text().strip()
        voters = ",".join(f"{n}@127.0.0.1:{c}" for n, (_p, c) in enumerate(self.ports, 1))
        nodes = tuple(
            LocalBroker(
                home=self.home / f"node-{n}",
                port=port,
                controller_port=controller,
                heap=self.heap,
                node_id=n,
                voters=voters,
                replication=len(self.ports),
                cluster_id=cluster_id,
            )
            for n, (port, controller) in enumerate(self.ports, 1)
        )
        object.__setattr__(self, "nodes", nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> LocalBroker:
        return self.nodes[node_id - 1]

    def up(self) -> str:
        """Start every node not running (all at once: a node is ready only with a quorum)."""
        for node in self.nodes:
            if node.running_pid() is None:
                node.start()
        self.wait_ready()
        return self.bootstrap

    def down(self) -> None:
        for node in self.nodes:
            node.down()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every node answers and the metadata lists all of them."""
        for node in self.nodes:
            node.wait_ready()
        # One client for the whole wait: a throw-away client per poll, destroyed while brokers
        # come and go, was beside a librdkafka abort in a chaos run's test process.
        admin = self._admin()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.brokers_seen(admin) == len(self.nodes):
                return
            time.sleep(0.5)
        raise BrokerError(f"the cluster did not list {len(self.nodes)} brokers in time")

    def brokers_seen(self, admin: AdminClient | None = None) -> int:
        admin = admin or self._admin()
        try:
            return len(admin.list_topics(timeout=5).brokers)
        except Exception:  # not answering yet
            return 0

    def _admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.localkafka.cluster")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--home", type=Path, default=Path(".local/cluster"))
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.home.resolve())
    try:
        if args.action == "up":
            print(f"Kafka cluster ready at {cluster.up()} (logs: {cluster.home}/node-*/)")
        elif args.action == "down":
            cluster.down()
            print("Kafka cluster stopped")
        else:
            seen = cluster.brokers_seen()
            print(f"{seen} of {len(cluster.nodes)} brokers answer at {cluster.bootstrap}")
            return 0 if seen == len(cluster.nodes) else 1
    except BrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
