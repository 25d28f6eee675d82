"""A minimal faust app with a table, run as a real worker process by the smoke test.

`python -m tests.integration.faust_smoke_app` reads its topics and broker from SMOKE_* variables.
"""

from __future__ import annotations

import os
from typing import Any

import faust


def make_app(bootstrap: str, source: str, sink: str, guarantee: str) -> Any:
    app = faust.App(
        f"smoke-{source}",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        processing_guarantee=guarantee,
        topic_replication_factor=1,
        topic_partitions=1,
        web_enabled=False,
        topic_disable_leader=True,
        broker_commit_interval=0.2,
        autodiscover=False,
    )
    counts = app.Table("counts", default=int, partitions=1)
    source_topic = app.topic(source, key_serializer="raw", value_serializer="raw")
    sink_topic = app.topic(sink, key_serializer="raw", value_serializer="raw")

    @app.agent(source_topic)
    async def count(stream: Any) -> None:
        async for key, _value in stream.items():
            name = key.decode()
            counts[name] += 1
            await sink_topic.send(key=key, value=str(counts[name]).encode())

    return app


if __name__ == "__main__":
    make_app(
        os.environ["SMOKE_BOOTSTRAP"],
        os.environ["SMOKE_SOURCE"],
        os.environ["SMOKE_SINK"],
        os.environ["SMOKE_GUARANTEE"],
    ).main()
