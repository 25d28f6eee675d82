"""`make_app(settings)`: the faust app with the decider and the projector. No import-time app."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from schemas.topics import BALANCES, COMMANDS, DLQ, EVENTS, OUTCOMES
from streams.continuity import Continuity
from streams.decider import DeciderPorts, Record, handle_command
from streams.metrics import Metrics
from streams.projector import ProjectorPorts, handle_event
from streams.settings import LedgerSettings
from streams.watchdog import StallWatch, end_process_after, lag_of

log = logging.getLogger(__name__)
RAW: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}


def make_app(settings: LedgerSettings, metrics: Metrics | None = None) -> faust.App:
    metrics = metrics or Metrics()
    app = faust.App(
        settings.group_id,
        broker=_broker_urls(settings),
        broker_credentials=_credentials(settings),
        store=settings.table_store,
        datadir=settings.data_dir,
        processing_guarantee=settings.processing_guarantee,
        broker_commit_interval=settings.commit_interval_s,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # No on_leader timers: skip the leader-election topic.
        topic_disable_leader=True,
        # `ensure_topics` has made every topic, changelogs included, before faust starts: faust
        # must not try again (a least-privilege worker may not create topics, README "Security").
        topic_allow_declare=False,
        # Standby replicas keep faust's own assignor under exactly_once (faust-streaming#440).
        table_standby_replicas=1,
        web_enabled=False,
        autodiscover=False,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=max(settings.max_message_bytes * 4, 1_000_000),
    )
    topics = {
        spec.name: app.topic(settings.topic(spec.name), **RAW)
        for spec in (COMMANDS, EVENTS, OUTCOMES, BALANCES, DLQ)
    }
    processed: dict[tuple[str, int], int] = {}
    cursors = app.Table("cursors", partitions=settings.partitions)
    commands_guard = Continuity(cursors, settings, metrics)
    transactional = settings.processing_guarantee == "exactly_once"
    events_guard = Continuity(
        cursors, settings, metrics, marker_tolerance=1 if transactional else 0
    )
    _add_decider(app, settings, topics, metrics, processed, commands_guard)
    _add_projector(app, topics, metrics, processed, events_guard)
    _add_outcome_counter(app, topics)
    _add_watchdogs(app, settings, metrics, processed)
    return app


def _add_decider(
    app: faust.App,
    settings: LedgerSettings,
    topics: dict[str, Any],
    metrics: Metrics,
    processed: dict[tuple[str, int], int],
    guard: Continuity,
) -> None:
    loans = app.Table("loans", partitions=settings.partitions)
    ports = DeciderPorts(
        loans=loans,
        events=topics[EVENTS.name],
        outcomes=topics[OUTCOMES.name],
        dlq=topics[DLQ.name],
        policy=settings.policy(),
        max_message_bytes=settings.max_message_bytes,
        metrics=metrics,
    )

    @app.agent(topics[COMMANDS.name], name="decider")
    async def decider(stream: Any) -> None:
        async for event in stream.events():
            record = _record(event.message)
            await _process_in_order(app, guard, record, lambda r: handle_command(ports, r))
            processed[(record.topic, record.partition)] = record.offset


def _add_projector(
    app: faust.App,
    topics: dict[str, Any],
    metrics: Metrics,
    processed: dict[tuple[str, int], int],
    guard: Continuity,
) -> None:
    ports = ProjectorPorts(
        progress=app.Table("projected-seq"),
        balances=app.Table("balances"),
        balance_topic=topics[BALANCES.name],
        dlq=topics[DLQ.name],
        read_back=guard.read_range,
        metrics=metrics,
    )

    @app.agent(topics[EVENTS.name], name="projector")
    async def projector(stream: Any) -> None:
        async for event in stream.events():
            record = _record(event.message)
            await _process_in_order(app, guard, record, lambda r: handle_event(ports, r))
            processed[(record.topic, record.partition)] = record.offset


def _add_outcome_counter(app: faust.App, topics: dict[str, Any]) -> None:
    """Subscribing to outcomes makes faust route the decider's outcome sends through the same
    transactional producer as the command (faust-streaming#177: it only routes topics it reads)."""

    @app.agent(topics[OUTCOMES.name], name="outcome-watch")
    async def watch(stream: Any) -> None:
        async for _outcome in stream:
            pass


async def _process_in_order(
    app: faust.App, guard: Continuity, record: Record, handle: Callable[[Record], Awaitable[None]]
) -> None:
    """Handle what faust skipped before `record`, then `record`, each exactly once."""
    if guard.processed_already(record):
        return
    for missed in await guard.skipped_before(record):
        await handle(missed)
        guard.advance(missed)
    await handle(record)
    guard.advance(record)
    # Table writes sit in faust's producer buffer; hand them to the producer before faust may
    # ack this record and commit its offset, so a committed offset never runs ahead of the
    # tables (faust's exactly_once commit does not drain that buffer: robinhood/faust#599).
    # Not `buffer.flush()`: it clears its "sent" event and then waits up to 100 ms for the
    # next one, which made every record wait (69 commands/s) and took part in worker stalls.
    await _drain(app.producer.buffer)


async def _drain(buffer: Any) -> None:
    while buffer.size:
        await asyncio.sleep(0)  # let faust's buffer task hand the next write to the producer


def _add_watchdogs(
    app: faust.App,
    settings: LedgerSettings,
    metrics: Metrics,
    processed: dict[tuple[str, int], int],
) -> None:
    transactional = settings.processing_guarantee == "exactly_once"
    inputs = {
        settings.topic(COMMANDS.name): 0,
        settings.topic(EVENTS.name): 1 if transactional else 0,
    }
    stalls = StallWatch(stall_s=settings.stall_s)

    @app.timer(interval=5.0)  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def watch_partitions() -> None:
        """Lag per assigned partition, and the stall watchdog (streams/watchdog.py)."""
        for tp in app.consumer.assignment():
            lag = lag_of(app.consumer, tp, processed.get((tp.topic, tp.partition)))
            metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        stalls.check(app.consumer, processed, inputs)

    def bound_the_stop(_sender: Any, /, *_args: Any, signal: Any, **_kwargs: Any) -> None:
        end_process_after(settings.shutdown_grace_s)

    app.on_before_shutdown.connect(bound_the_stop)


def _record(message: Any) -> Record:
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
    )


def _broker_urls(settings: LedgerSettings) -> list[str]:
    return [f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")]


def _credentials(settings: LedgerSettings) -> Any:
    if settings.sasl_mechanism:
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        ssl_context = None
        if settings.security_protocol == "SASL_SSL":
            ssl_context = ssl.create_default_context(cafile=settings.ssl_cafile)
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=password,
            mechanism=settings.sasl_mechanism,
            ssl_context=ssl_context,
        )
    if settings.security_protocol == "SSL":
        return faust.SSLCredentials(ssl.create_default_context(cafile=settings.ssl_cafile))
    return None
