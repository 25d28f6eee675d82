"""`python -m streams.dev.localkafka up|down|status|fetch`: the broker behind `make kafka-up`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.dev.localkafka.broker import BrokerError, LocalBroker, fetch_jars


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streams.dev.localkafka", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status", "fetch"])
    parser.add_argument("--home", type=Path, default=Path(".local/kafka"), help="data, log, pid")
    parser.add_argument("--port", type=int, default=9092, help="client port on 127.0.0.1")
    parser.add_argument("--controller-port", type=int, default=9093, help="KRaft controller port")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    broker = LocalBroker(
        home=args.home.resolve(), port=args.port, controller_port=args.controller_port
    )
    try:
        if args.action == "fetch":
            print(f"Kafka jars in {fetch_jars()}")
        elif args.action == "up":
            print(f"Kafka broker ready at {broker.up()} (log: {broker.log_file})")
        elif args.action == "down":
            broker.down()
            print("Kafka broker stopped")
        else:
            pid = broker.running_pid()
            ready = pid is not None and broker.is_ready()
            print(f"Kafka broker {'ready' if ready else 'not running'} at {broker.bootstrap}")
            return 0 if ready else 1
    except BrokerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
