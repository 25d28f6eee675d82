"""The gateway (`ledger gateway`): turns deduction and refund events into payment-channel calls and
reports every answer back to the decider as a command. It is also the auto-debit job: each
`AutoDebitDue` event becomes the `RequestRepayment(source=auto_debit)` it names.

What to do is decided by `ledger.channel_work` (pure); this module only calls, sends and waits.

Nothing it knows lives only in memory. It folds `ledger.events` into the open work of each
partition it owns, and commits, as that partition's consumer offset, the offset of the oldest
event that opened work still open (the low watermark). A gateway that restarts, or takes a
partition over in a rebalance, reads from there and rebuilds exactly the open work; calls it
repeats are deduplicated by the channel (the order id is the attempt id) and reports it repeats
by the decider (deterministic command ids). The cost: an attempt open for long keeps its
partition's re-read window open that long (the stuck alert names such attempts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, Counter, Gauge

from ledger.channel_work import (
    WORK_EVENT_TYPES,
    Answer,
    DebitWork,
    Failed,
    NoAnswer,
    NotFound,
    OpenWork,
    Processing,
    RefundWork,
    Succeeded,
    Then,
    Work,
    after_query,
    after_submit,
    auto_debit_request,
    is_stuck,
    needs_takeover,
    refund_refused,
    refund_succeeded,
    stuck_flag,
)
from schemas.channel import (
    DebitAnswer,
    DebitFailed,
    DebitNotFound,
    DebitProcessing,
    DebitRequest,
    DebitSucceeded,
    RefundRequest,
)
from schemas.commands import CommandBase
from schemas.events import AutoDebitDue, parse_event
from schemas.topics import COMMANDS, EVENTS
from streams.gateway.channels import ChannelClient, ChannelError, ChannelRejected, ChannelTimeout
from streams.settings import LedgerSettings

log = logging.getLogger(__name__)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter(
            "ledger_gateway_calls_total",
            "Channel calls by channel, call and answer",
            ["channel", "call", "answer"],
            registry=self.registry,
        )
        self.reports = Counter(
            "ledger_gateway_reports_total",
            "Commands sent to the decider",
            ["type"],
            registry=self.registry,
        )
        self.open_work = Gauge(
            "ledger_gateway_open_work", "Attempts and refunds in flight", registry=self.registry
        )
        self.stuck = Gauge(
            "ledger_gateway_stuck_attempts",
            "Attempts in flight longer than the stuck alert age (alert when > 0)",
            registry=self.registry,
        )
        self.takeovers = Counter(
            "ledger_gateway_takeovers_total",
            "Open work resumed by the sweeper",
            registry=self.registry,
        )


@dataclass
class PartitionWork:
    """What the gateway holds for one partition of `ledger.events` it owns."""

    open: OpenWork = field(default_factory=OpenWork)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # No call starts before the fold has read up to here: until then an open attempt may be one
    # that a later event, not yet read, closes.
    catch_up_to: int = 0
    caught_up: bool = False
    stuck_sent: set[str] = field(default_factory=set)
    committed: int = -1
    # When a task of ours last called or reported for a key. A final answer waits in the
    # decider's queue for a while; without this the sweeper would take over work we just
    # finished and pile repeats onto a busy decider.
    touched_ms: dict[str, int] = field(default_factory=dict)

    def idle_since_ms(self, key: str, item: Work) -> int:
        return max(item.last_activity_ms, self.touched_ms.get(key, 0))

    def live(self, key: str) -> bool:
        task = self.tasks.get(key)
        return task is not None and not task.done()

    def cancel_all(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()


class Backoff:
    """Doubling waits with jitter, so a thousand polls of one slow channel do not move in step."""

    def __init__(self, initial_s: float, maximum_s: float) -> None:
        self._next = initial_s
        self._maximum = maximum_s

    def next(self) -> float:
        wait = self._next
        self._next = min(self._next * 2, self._maximum)
        return wait * random.uniform(0.8, 1.2)  # jitter, not security


class Gateway:
    def __init__(
        self,
        settings: LedgerSettings,
        channels: ChannelClient,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._channels = channels
        self._metrics = metrics or GatewayMetrics()
        self._clock = clock
        self._calls = asyncio.Semaphore(settings.gateway_concurrency)
        self._partitions: dict[TopicPartition, PartitionWork] = {}
        self._scheduled: list[CommandBase] = []
        self._events_topic = settings.topic(EVENTS.name)
        self._commands_topic = settings.topic(COMMANDS.name)
        self._consumer = AIOKafkaConsumer(
            group_id=f"{settings.group_id}-gateway",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **settings.aiokafka_config(),
        )
        self._producer = AIOKafkaProducer(
            enable_idempotence=True, acks="all", linger_ms=2, **settings.aiokafka_config()
        )

    @property
    def metrics(self) -> GatewayMetrics:
        return self._metrics

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, call, report, sweep; until `stop` is set."""
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe([self._events_topic], listener=_Rebalance(self))
        sweeper = asyncio.create_task(self._sweep_forever(), name="gateway-sweeper")
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=2_000)
                await self._fold(batch)
                await self._commit()
        finally:
            sweeper.cancel()
            for work in self._partitions.values():
                work.cancel_all()
            await self._commit()
            await self._consumer.stop()
            await self._producer.stop()
            await self._channels.close()

    # ---- the fold ------------------------------------------------------------------------

    async def _fold(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for tp, records in batch.items():
            work = self._partitions.get(tp)
            if work is None:
                self._hand_back(tp, records[0].offset)
                continue
            for record in records:
                self._apply(work, record)
        # Sent before the offsets move past their events: a crash re-reads and resends them,
        # and the decider answers "duplicate".
        scheduled, self._scheduled = self._scheduled, []
        for request in scheduled:
            await self._report(request)
        for tp, work in list(self._partitions.items()):
            if work.caught_up:
                continue
            if tp not in batch or await self._consumer.position(tp) >= work.catch_up_to:
                work.caught_up = True
                for key in list(work.open.items):
                    self._ensure_task(work, key)
        self._metrics.open_work.set(sum(len(w.open.items) for w in self._partitions.values()))

    def _hand_back(self, tp: TopicPartition, first_offset: int) -> None:
        """Records of a partition we hold no work for: revoked while the batch was on its way
        (drop them), or assigned but our listener has not finished taking it (aiokafka#738:
        the fetcher is unblocked before `on_partitions_assigned` runs). Those must be read
        again once it has, or the next commit would skip their open work."""
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, first_offset)

    def _apply(self, work: PartitionWork, record: ConsumerRecord[bytes, bytes]) -> None:
        value = record.value
        if value is None:
            return
        kind = _event_type(value)
        if kind not in WORK_EVENT_TYPES and kind != "AutoDebitDue":
            return
        try:
            event = parse_event(value)
        except ValueError as error:
            # The decider validated it; a reader this old should be upgraded, not crash.
            log.error("offset %d: unreadable event skipped: %s", record.offset, error)
            return
        if isinstance(event, AutoDebitDue):
            self._scheduled.append(auto_debit_request(event, self._now()))
            return
        key = work.open.apply(event, record.offset, record.timestamp)
        for unusable in work.open.unusable:
            log.error("event %s: no currency or business date, cannot call a channel", unusable)
        work.open.unusable.clear()
        if key is None:
            return
        if key not in work.open.items:
            work.touched_ms.pop(key, None)
            task = work.tasks.pop(key, None)
            if task is not None:
                task.cancel()  # closed by someone else (reconciliation, another gateway)
        elif work.caught_up:
            self._ensure_task(work, key)

    async def _commit(self) -> None:
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, work in list(self._partitions.items()):
            if not work.caught_up:
                continue
            position = await self._consumer.position(tp)
            mark = work.open.low_watermark(position)
            if mark != work.committed:
                offsets[tp] = OffsetAndMetadata(mark, "")
                work.committed = mark
        if offsets:
            await self._consumer.commit(offsets)

    # ---- the calls -----------------------------------------------------------------------

    def _ensure_task(self, work: PartitionWork, key: str) -> None:
        item = work.open.items.get(key)
        if item is None or work.live(key):
            return  # closed meanwhile (the sweeper awaits between its look and this call)

        def touch() -> None:
            work.touched_ms[key] = int(self._clock() * 1000)

        touch()
        drive = (
            self._drive_debit(item, touch)
            if isinstance(item, DebitWork)
            else self._drive_refund(item, touch)
        )
        task = asyncio.create_task(drive, name=f"gateway-{key}")
        task.add_done_callback(_log_failure)
        work.tasks[key] = task

    async def _drive_debit(self, work: DebitWork, touch: Callable[[], None]) -> None:
        backoff = Backoff(self._settings.poll_initial_s, self._settings.poll_max_s)
        then, first = Then.POLL, True  # a query before the first call too: we may have called
        while then is not Then.DONE:
            if then is Then.SUBMIT:
                answer = await self._ask(work, "submit", self._submit(work))
                step = after_submit(work, answer, self._now())
            else:
                if not first:
                    await asyncio.sleep(backoff.next())
                first = False
                answer = await self._ask(work, "query", self._query(work))
                step = after_query(work, answer, self._now())
            for report in step.reports:
                await self._report(report)
            touch()
            work, then = step.work, step.then

    async def _drive_refund(self, work: RefundWork, touch: Callable[[], None]) -> None:
        backoff = Backoff(self._settings.poll_initial_s, self._settings.poll_max_s)
        request = RefundRequest(
            refund_id=work.refund_id,
            order_id=work.order_id,
            account_ref=work.account_ref,
            amount_minor=work.amount_minor,
            currency=work.currency,
        )
        while True:
            try:
                async with self._calls:
                    answer = await self._channels.refund(work.channel, request)
            except ChannelRejected as error:
                log.error("refund %s refused by %s: %s", work.refund_id, work.channel, error)
                await self._report(refund_refused(work, "channel_rejected", self._now()))
                return
            except ChannelError as error:
                # The channel deduplicates by refund id: asking again is safe.
                log.warning("refund %s: %s; retrying", work.refund_id, error)
                self._metrics.calls.labels(work.channel, "refund", "no_answer").inc()
                await asyncio.sleep(backoff.next())
                continue
            self._metrics.calls.labels(work.channel, "refund", "succeeded").inc()
            await self._report(refund_succeeded(work, answer.channel_reference, self._now()))
            touch()
            return

    def _submit(self, work: DebitWork) -> Awaitable[DebitAnswer]:
        request = DebitRequest(
            order_id=work.attempt_id,
            account_ref=work.account_ref,
            amount_minor=work.amount_minor,
            currency=work.currency,
            business_date=work.business_date,
        )
        return self._channels.debit(work.channel, request)

    def _query(self, work: DebitWork) -> Awaitable[DebitAnswer]:
        return self._channels.query(work.channel, work.attempt_id)

    async def _ask(self, work: DebitWork, call: str, calling: Awaitable[DebitAnswer]) -> Answer:
        answer: Answer
        try:
            async with self._calls:
                answer = _heard(await calling)
        except ChannelTimeout:
            answer = NoAnswer("timeout")
        except ChannelRejected as error:
            log.error("attempt %s: %s", work.attempt_id, error)
            answer = NoAnswer("error")
        except ChannelError as error:
            log.warning("attempt %s: %s", work.attempt_id, error)
            answer = NoAnswer("error")
        self._metrics.calls.labels(work.channel, call, type(answer).__name__.lower()).inc()
        return answer

    async def _report(self, command: CommandBase) -> None:
        await self._producer.send_and_wait(
            self._commands_topic,
            key=command.loan_id.encode(),
            value=command.model_dump_json().encode(),
        )
        self._metrics.reports.labels(type(command).__name__).inc()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # ---- the sweeper and the stuck check --------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed; the next one retries")

    async def sweep(self) -> None:
        """Resume open work nobody works on; flag attempts in flight past the alert age."""
        now_ms = int(self._clock() * 1000)
        takeover_ms = int(self._settings.takeover_age_s * 1000)
        alert_ms = int(self._settings.stuck_alert_age_s * 1000)
        stuck = 0
        for work in list(self._partitions.values()):
            if not work.caught_up:
                continue
            for key, item in list(work.open.items.items()):
                if isinstance(item, DebitWork) and is_stuck(item, now_ms, alert_ms):
                    stuck += 1
                    await self._flag(work, item)
                idle = replace(item, last_activity_ms=work.idle_since_ms(key, item))
                if not work.live(key) and needs_takeover(idle, now_ms, takeover_ms):
                    log.warning("taking over %s, idle since %d ms", key, idle.last_activity_ms)
                    self._metrics.takeovers.inc()
                    self._ensure_task(work, key)
        self._metrics.stuck.set(stuck)

    async def _flag(self, work: PartitionWork, item: DebitWork) -> None:
        if item.stuck_flagged or item.attempt_id in work.stuck_sent:
            return
        log.error(
            "ALERT attempt %s of loan %s in flight since %d ms on %s",
            item.attempt_id,
            item.loan_id,
            item.started_ms,
            item.channel,
        )
        await self._report(stuck_flag(item, self._now()))
        work.stuck_sent.add(item.attempt_id)

    # ---- partitions come and go -----------------------------------------------------------

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        ends = await self._consumer.end_offsets(list(partitions)) if partitions else {}
        for tp in partitions:
            self._partitions[tp] = PartitionWork(catch_up_to=ends.get(tp, 0))
        log.info("gateway owns %s", sorted(tp.partition for tp in self._partitions))

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        await self._commit()
        for tp in partitions:
            work = self._partitions.pop(tp, None)
            if work is not None:
                work.cancel_all()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped here
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._gateway.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._gateway.assigned(set(assigned))


def _event_type(value: bytes) -> str | None:
    """The type of an event without validating all of it: most events are not the gateway's."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return None
    kind = decoded.get("type") if isinstance(decoded, dict) else None
    return kind if isinstance(kind, str) else None


def _heard(answer: DebitAnswer) -> Answer:
    match answer:
        case DebitSucceeded():
            return Succeeded(answer.channel_reference, answer.amount_minor)
        case DebitFailed():
            return Failed(answer.code, answer.retriable)
        case DebitProcessing():
            return Processing()
        case DebitNotFound():
            return NotFound()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The sweeper resumes the work after the takeover age.
        log.error("%s failed: %r", task.get_name(), task.exception())


# ---- the process -------------------------------------------------------------------------


def run_gateway(settings: LedgerSettings) -> None:
    """Run until SIGTERM or Ctrl-C (`ledger gateway`)."""
    asyncio.run(_serve(settings))


async def _serve(settings: LedgerSettings) -> None:
    metrics = GatewayMetrics()
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = ChannelClient(settings.channels_url, settings.channel_call_timeout_s)
    gateway = Gateway(settings, client, metrics)
    log.warning("gateway calling %s", settings.channels_url)
    await gateway.run(stop)


__all__ = ["Gateway", "GatewayMetrics", "Work", "run_gateway"]
