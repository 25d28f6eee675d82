"""The wire contract: committed JSON Schemas, integer money, JSON round trips, topic registry."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, date, timedelta
from typing import Any, Literal, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import LoanState, decide, initial_state
from ledger.state import AttemptStatus, RefundStatus
from schemas.base import IDENTIFIER_PATTERN, MAX_AMOUNT_MINOR
from schemas.commands import (
    CloseBusinessDay,
    Command,
    FlagStuckAttempt,
    OpenLoan,
    RepaymentMethod,
    ReportChannelFailure,
    ReportChannelProcessing,
    ReportChannelSuccess,
    ReportDuplicateDebit,
    ReportOrderNotFound,
    ReportOutcomeUnknown,
    ReportRefundFailure,
    ReportRefundSuccess,
    ReportReversal,
    ReportSubmission,
    ReportUnrecordedSuccess,
    RequestRepayment,
    Source,
    parse_command,
)
from schemas.events import Event, encode_event, parse_event
from schemas.generate import OUTPUT, render
from schemas.outcomes import Outcome
from schemas.topics import ALL_TOPICS, CleanupPolicy
from tests.support.builders import (
    LOAN,
    at,
    close_day,
    discrepancy,
    duplicate_debit,
    failure,
    fold,
    in_flight_id,
    last_refund_id,
    open_loan,
    order_not_found,
    outcome_unknown,
    processing,
    refund_failure,
    refund_success,
    request,
    reversal,
    stuck,
    submitted,
    success,
    unrecorded_success,
)

EVENT_TYPES = get_args(get_args(Event)[0])

# ---- (a) the committed JSON Schemas are what the models generate ------------------------------


@pytest.mark.parametrize(("name", "text"), sorted(render().items()))
def test_committed_json_schema_is_up_to_date(name: str, text: str) -> None:
    path = OUTPUT / name
    committed = path.read_text() if path.exists() else None
    assert committed == text, f"schemas/json/{name} is out of date: run `make schemas`"


def test_no_stale_json_schema_is_committed() -> None:
    stale = {p.name for p in OUTPUT.glob("*.json")} - set(render())
    assert not stale, f"schemas/json has files no model generates: {sorted(stale)}; delete them"


# ---- (b) money is never a float in any schema ----------------------------------------------


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (`#/$defs/Name`) to the schema it names."""
    while "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _is_integer(node: dict[str, Any], root: dict[str, Any]) -> bool:
    """An integer, or a union of integers and null with at least one integer."""
    node = _resolve(node, root)
    if node.get("type") == "integer":
        return True
    branches = node.get("anyOf") or node.get("oneOf")
    if not branches:
        return False
    resolved = [_resolve(branch, root) for branch in branches]
    non_null = [b for b in resolved if b.get("type") != "null"]
    return bool(non_null) and all(_is_integer(b, root) for b in non_null)


def money_problems(schema: dict[str, Any]) -> list[str]:
    """Every place in `schema` that declares a float, or a `*_minor` property that is not an
    integer; the walk reaches `$defs`, `properties`, `anyOf`/`oneOf`/`allOf` and `items`."""
    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]")
            return
        if not isinstance(node, dict):
            return
        declared = node.get("type")
        if declared == "number" or (isinstance(declared, list) and "number" in declared):
            problems.append(f"{where}: type number (a float)")
        for name, prop in (node.get("properties") or {}).items():
            if name.endswith("_minor") and not _is_integer(prop, schema):
                problems.append(f"{where}.properties.{name}: not an integer")
        for key, value in node.items():
            walk(value, f"{where}.{key}")

    walk(schema, "$")
    return problems


@pytest.mark.parametrize(("name", "text"), sorted(render().items()))
def test_money_is_an_integer_in_every_schema(name: str, text: str) -> None:
    assert money_problems(json.loads(text)) == []


FLOAT = "type number (a float)"


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"properties": {"amount_minor": {"type": "number"}}},
            ["$.properties.amount_minor: not an integer", f"$.properties.amount_minor: {FLOAT}"],
        ),
        (
            {
                "$defs": {
                    "Fee": {"properties": {"fee_minor": {"$ref": "#/$defs/Float"}}},
                    "Float": {"type": ["number", "null"]},
                }
            },
            ["$.$defs.Fee.properties.fee_minor: not an integer", f"$.$defs.Float: {FLOAT}"],
        ),
        (
            {"properties": {"x": {"anyOf": [{"type": "integer"}, {"type": "number"}]}}},
            [f"$.properties.x.anyOf[1]: {FLOAT}"],
        ),
        (
            {"properties": {"rate_minor": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
            ["$.properties.rate_minor: not an integer"],
        ),
    ],
)
def test_the_money_walker_flags_floats(schema: dict[str, Any], expected: list[str]) -> None:
    assert sorted(money_problems(schema)) == sorted(expected)


def test_the_money_walker_accepts_optional_integers() -> None:
    schema = {
        "$defs": {"Amount": {"type": "integer", "minimum": 0}},
        "properties": {
            "amount_minor": {"anyOf": [{"$ref": "#/$defs/Amount"}, {"type": "null"}]},
            "fee_minor": {"type": "integer"},
        },
    }
    assert money_problems(schema) == []


# ---- (c) JSON round trips --------------------------------------------------------------------

DETAILS: tuple[Literal["timeout", "error"], ...] = ("timeout", "error")
identifiers = st.from_regex(IDENTIFIER_PATTERN.strip("^$"), fullmatch=True)
texts = st.text(max_size=200)
amounts = st.integers(1, MAX_AMOUNT_MINOR)
utc_times = st.datetimes(timezones=st.just(UTC))
envelope = {"command_id": identifiers, "loan_id": identifiers, "issued_at": utc_times}
channels = st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True)
statement = {**envelope, "order_id": identifiers, "channel": channels, "statement_date": st.dates()}
attempt_envelope = {**envelope, "attempt_id": identifiers}

COMMANDS: st.SearchStrategy[Command] = st.one_of(
    st.builds(
        OpenLoan,
        **envelope,
        borrower_id=identifiers,
        principal_minor=amounts,
        currency=st.from_regex(r"[A-Z]{3}", fullmatch=True),
        annual_rate_bps=st.integers(0, 100_000),
        term_months=st.integers(1, 600),
        repayment_method=st.sampled_from(RepaymentMethod),
        first_due_date=st.dates(),
        fee_per_installment_minor=st.integers(0, MAX_AMOUNT_MINOR),
        debit_account_ref=st.none() | identifiers,
    ),
    st.builds(
        RequestRepayment,
        **envelope,
        source=st.sampled_from(Source),
        requested_by=identifiers,
        installments=st.none() | st.lists(st.integers(1, 600), min_size=1).map(tuple),
        amount_minor=st.none() | amounts,
    ),
    st.builds(CloseBusinessDay, **envelope, business_date=st.dates()),
    st.builds(ReportSubmission, **attempt_envelope),
    st.builds(ReportChannelProcessing, **attempt_envelope),
    st.builds(ReportOrderNotFound, **attempt_envelope),
    st.builds(FlagStuckAttempt, **attempt_envelope),
    st.builds(
        ReportChannelSuccess, **attempt_envelope, channel_reference=texts, amount_minor=amounts
    ),
    st.builds(ReportChannelFailure, **attempt_envelope, code=identifiers, retriable=st.booleans()),
    st.builds(ReportOutcomeUnknown, **attempt_envelope, detail=st.sampled_from(DETAILS)),
    st.builds(ReportReversal, **statement),
    st.builds(ReportDuplicateDebit, **statement, channel_reference=texts, amount_minor=amounts),
    st.builds(ReportUnrecordedSuccess, **statement, channel_reference=texts, amount_minor=amounts),
    st.builds(ReportRefundSuccess, **envelope, refund_id=identifiers, channel_reference=texts),
    st.builds(ReportRefundFailure, **envelope, refund_id=identifiers, code=identifiers),
)


def assert_command_round_trips(command: Command) -> None:
    wire = command.model_dump_json()
    assert parse_command(wire) == command
    assert parse_command(wire).model_dump_json() == wire


def assert_event_round_trips(event: Event) -> None:
    wire = encode_event(event)
    assert parse_event(wire) == event
    assert encode_event(parse_event(wire)) == wire


def assert_outcome_round_trips(outcome: Outcome) -> None:
    wire = outcome.model_dump_json()
    assert Outcome.model_validate_json(wire) == outcome
    assert Outcome.model_validate_json(wire).model_dump_json() == wire


@given(COMMANDS)
def test_any_command_round_trips(command: Command) -> None:
    assert_command_round_trips(command)


class Log:
    """A loan driven command by command, keeping every command, outcome and event."""

    def __init__(self) -> None:
        self.state: LoanState = initial_state(LOAN)
        self.commands: list[Command] = []
        self.outcomes: list[Outcome] = []
        self.events: list[Event] = []

    def send(self, command: Command) -> None:
        decision = decide(self.state, command)
        self.commands.append(command)
        self.outcomes.append(decision.outcome)
        self.events += decision.events
        self.state = fold(self.state, decision.events)


def _next_commands(state: LoanState, n: int) -> list[st.SearchStrategy[Command]]:
    """Commands that make sense for `state` (an answer for the attempt in flight, a statement
    line for a success, a refund answer for a pending refund...)."""
    cid, today = f"c{n}", state.business_date or date(2026, 1, 1)
    options: list[st.SearchStrategy[Command]] = [
        st.integers(1, 40).map(lambda days: close_day(today + timedelta(days=days), cid)),
        st.builds(request, st.just(cid), st.sampled_from(Source), issued_at=st.just(at(n))),
    ]
    if state.in_flight is not None:
        attempt = state.in_flight.attempt_id
        amount = state.in_flight.amount_minor
        answers: list[Callable[..., Command]] = [submitted, processing, order_not_found, stuck]
        options += [
            st.sampled_from(answers).map(lambda answer: answer(cid, attempt)),
            st.sampled_from(DETAILS).map(lambda detail: outcome_unknown(cid, attempt, detail)),
            st.integers(1, 2 * amount).map(lambda paid: success(cid, attempt, paid)),
            st.booleans().map(lambda retriable: failure(cid, attempt, "declined", retriable)),
        ]
    for found in state.attempts:
        order, channel = found.attempt_id, found.channel
        if found.status is AttemptStatus.SUCCEEDED:
            options.append(st.just(reversal(cid, order, channel)))
        if found.status in (AttemptStatus.SUCCEEDED, AttemptStatus.REVERSED):
            line = functools.partial(
                duplicate_debit, cid, order, reference=f"d{n}", channel=channel
            )
            options.append(amounts.map(line))
        if found.status is AttemptStatus.FAILED:
            options.append(
                st.just(unrecorded_success(cid, order, found.amount_minor, "u", channel))
            )
    for refund in state.refunds:
        if refund.status is RefundStatus.PENDING:
            options.append(st.just(refund_success(cid, refund.refund_id)))
            options.append(st.just(refund_failure(cid, refund.refund_id)))
    return options


@st.composite
def ledger_logs(draw: st.DrawFn) -> Log:
    log = Log()
    log.send(
        open_loan(
            principal_minor=draw(st.integers(1, 10**9)),
            currency=draw(st.sampled_from(["CNY", "USD"])),
            annual_rate_bps=draw(st.integers(0, 3600)),
            term_months=draw(st.integers(1, 24)),
            repayment_method=draw(st.sampled_from(RepaymentMethod)),
            fee_per_installment_minor=draw(st.integers(0, 5_000)),
        )
    )
    for n in range(draw(st.integers(0, 20))):
        log.send(draw(st.one_of(_next_commands(log.state, n))))
    return log


@settings(max_examples=50, deadline=None)
@given(ledger_logs())
def test_what_the_ledger_produces_round_trips(log: Log) -> None:
    for command in log.commands:
        assert_command_round_trips(command)
    for outcome in log.outcomes:
        assert_outcome_round_trips(outcome)
    for event in log.events:
        assert_event_round_trips(event)


def test_every_event_type_round_trips() -> None:
    """One scripted history that produces each of the 22 event types at least once."""
    log = Log()
    log.send(open_loan(fee_per_installment_minor=500, term_months=3))
    log.send(close_day(date(2026, 2, 1), "d1"))  # fell due, auto-debit due
    log.send(close_day(date(2026, 2, 10), "d2"))  # late fee
    log.send(request("r1", installments=(1, 2, 3)))  # rows 2 and 3 not due yet
    first = in_flight_id(log.state)
    for command in (
        submitted("a1", first),
        processing("a2", first),
        outcome_unknown("a3", first),
        order_not_found("a4", first),
        stuck("a5", first),
        failure("a6", first, "bank_busy", retriable=True),  # failed, backup started on beta
    ):
        log.send(command)
    backup = in_flight_id(log.state)
    log.send(success("a7", backup, 10**8))  # charges recognised early, the rest above the attempt
    log.send(duplicate_debit("a9", backup, 1_000, channel="beta"))  # a refund started
    log.send(refund_success("a8", last_refund_id(log.state)))
    log.send(duplicate_debit("a9b", backup, 1_000, reference="ch-ref-3", channel="beta"))
    log.send(refund_failure("a10", last_refund_id(log.state)))
    log.send(reversal("a11", backup, channel="beta"))
    log.send(unrecorded_success("a12", first, 1_000, channel="alpha"))
    log.send(discrepancy("a13", first, channel="alpha"))
    log.send(close_day(date(2026, 2, 10), "d3"))  # refused, and remembered: CommandRejected

    *accepted, refused = log.outcomes
    assert all(outcome.status == "accepted" for outcome in accepted), log.outcomes
    assert (refused.status, refused.reason) == ("rejected", "stale_business_date")
    every_type = {get_args(kind.model_fields["type"].annotation)[0] for kind in EVENT_TYPES}
    assert {event.type for event in log.events} == every_type
    for event in log.events:
        assert_event_round_trips(event)
    for outcome in log.outcomes:
        assert_outcome_round_trips(outcome)


# ---- (d) the topic registry is docs/design.md -----------------------------------------------

DAY_MS = 86_400_000


@pytest.mark.parametrize(
    ("name", "key", "cleanup", "retention_ms"),
    [
        ("ledger.commands", "loan_id", "delete", str(7 * DAY_MS)),
        ("ledger.events", "loan_id", "delete", "-1"),
        ("ledger.outcomes", "loan_id", "delete", str(7 * DAY_MS)),
        ("ledger.balances", "account", "compact", None),
        ("ledger.loan-states", "loan_id", "compact", "-1"),
        ("ledger.projector-states", "loan_id", "compact", "-1"),
        ("ledger.dlq", "original key", "delete", str(30 * DAY_MS)),
    ],
)
def test_topic_registry_matches_design_section_4(
    name: str, key: str, cleanup: str, retention_ms: str | None
) -> None:
    [topic] = [t for t in ALL_TOPICS if t.name == name]
    configs = topic.configs()
    assert topic.key == key
    assert configs["cleanup.policy"] == cleanup
    if retention_ms is not None:
        assert configs["retention.ms"] == retention_ms


def test_the_registry_has_exactly_the_design_topics() -> None:
    assert sorted(t.name for t in ALL_TOPICS) == [
        "ledger.balances",
        "ledger.commands",
        "ledger.dlq",
        "ledger.events",
        "ledger.loan-states",
        "ledger.outcomes",
        "ledger.projector-states",
    ]
    by_name = {t.name: t for t in ALL_TOPICS}
    # A caller that knows its loan id knows which partition carries its outcome.
    assert all(
        by_name[n].copartitioned
        for n in (
            "ledger.commands", "ledger.events", "ledger.outcomes", "ledger.loan-states",
            "ledger.projector-states",
        )
    )  # fmt: skip
    # A restore reads a loan's latest snapshot: compaction keeps only that.
    assert by_name["ledger.loan-states"].cleanup_policy is CleanupPolicy.COMPACT
    assert by_name["ledger.balances"].cleanup_policy is CleanupPolicy.COMPACT
