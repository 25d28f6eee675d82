"""Commands that send a command to the ledger and print its outcome: open-loan, repay, close-day.

Exit codes: 0 accepted (or a duplicate of an accepted command), 1 rejected, 2 usage or
infrastructure trouble (with a message saying what to do).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

import click

from schemas.commands import (
    CloseBusinessDay,
    CloseBusinessDayForPartition,
    CommandBase,
    OpenLoan,
    RequestRepayment,
)
from schemas.outcomes import Outcome, OutcomeStatus
from streams.errors import RefusedError
from streams.settings import LedgerSettings

DATE = click.DateTime(formats=["%Y-%m-%d"])


def yuan_to_minor(text: str) -> int:
    """'1234.5' -> 123450 fen; more than two decimals or a non-number is a usage error."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not an amount; write e.g. 1234.50") from None
    minor = amount * 100
    if minor != minor.to_integral_value() or minor <= 0:
        raise click.BadParameter(f"{text!r}: a positive amount with at most two decimals")
    return int(minor)


def _new_id(kind: str) -> str:
    return f"cli-{kind}-{uuid.uuid4().hex[:16]}"


def _common(function: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option("--command-id", help="Idempotency key; default: a fresh one."),
        click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON."),
        click.option(
            "--no-wait", is_flag=True, help="Send and return without waiting for the outcome."
        ),
        click.option(
            "--timeout", default=30.0, show_default=True, help="Seconds to wait for the outcome."
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command("open-loan")
@click.option("--loan", "loan_id", required=True, help="The new loan's id.")
@click.option("--borrower", "borrower_id", required=True, help="The borrower's id.")
@click.option("--principal", required=True, help="Principal in yuan, e.g. 12000.00.")
@click.option("--rate-bps", default=1200, show_default=True, type=click.IntRange(0, 100_000),
              help="Annual interest rate in basis points (1200 = 12 %).")  # fmt: skip
@click.option("--term-months", default=12, show_default=True, type=click.IntRange(1, 600))
@click.option(
    "--method",
    type=click.Choice(["equal_installment", "equal_principal"]),
    default="equal_installment",
    show_default=True,
)
@click.option("--first-due", "first_due", required=True, type=DATE, help="YYYY-MM-DD.")
@click.option("--fee", default=None, help="Fee per installment in yuan (default 0).")
@click.option("--debit-account-ref", help="Token of the card to debit (default: the borrower).")
@_common
@click.pass_obj
def open_loan(
    settings: LedgerSettings,
    loan_id: str,
    borrower_id: str,
    principal: str,
    rate_bps: int,
    term_months: int,
    method: str,
    first_due: datetime,
    fee: str | None,
    debit_account_ref: str | None,
    command_id: str | None,
    as_json: bool,
    no_wait: bool,
    timeout: float,
) -> None:
    """Open a loan: the ledger computes its schedule and disburses the principal."""
    command = _build(
        OpenLoan,
        command_id=command_id or _new_id("open"),
        loan_id=loan_id,
        borrower_id=borrower_id,
        principal_minor=yuan_to_minor(principal),
        currency="CNY",
        annual_rate_bps=rate_bps,
        term_months=term_months,
        repayment_method=method,
        first_due_date=first_due.date(),
        fee_per_installment_minor=yuan_to_minor(fee) if fee else 0,
        debit_account_ref=debit_account_ref,
    )
    _deliver(settings, [command], as_json=as_json, wait=not no_wait, timeout_s=timeout)


@click.command("repay")
@click.option("--loan", "loan_id", required=True, help="The loan to debit.")
@click.option(
    "--source",
    type=click.Choice(["app", "auto_debit", "collection"]),
    default="app",
    show_default=True,
    help="The door the request comes through.",
)
@click.option("--requested-by", default="cli", show_default=True, help="Who asks.")
@click.option(
    "--installment",
    "installments",
    multiple=True,
    type=click.IntRange(1, 600),
    help="An installment to pay (repeatable); default: everything due.",
)
@click.option("--amount", help="A partial amount in yuan; default: all owed.")
@_common
@click.pass_obj
def repay(
    settings: LedgerSettings,
    loan_id: str,
    source: str,
    requested_by: str,
    installments: tuple[int, ...],
    amount: str | None,
    command_id: str | None,
    as_json: bool,
    no_wait: bool,
    timeout: float,
) -> None:
    """Ask for a repayment: a deduction attempt starts unless one is already in flight."""
    command = _build(
        RequestRepayment,
        command_id=command_id or _new_id("repay"),
        loan_id=loan_id,
        source=source,
        requested_by=requested_by,
        installments=installments or None,
        amount_minor=yuan_to_minor(amount) if amount else None,
    )
    _deliver(settings, [command], as_json=as_json, wait=not no_wait, timeout_s=timeout)


@click.command("close-day")
@click.option("--date", "business_date", required=True, type=DATE, help="YYYY-MM-DD.")
@click.option(
    "--loan",
    "loans",
    multiple=True,
    help="Close the day for this loan only (repeatable); default: every loan, with one tick "
    "per partition of ledger.commands.",
)
@_common
@click.pass_obj
def close_day(
    settings: LedgerSettings,
    business_date: datetime,
    loans: tuple[str, ...],
    command_id: str | None,
    as_json: bool,
    no_wait: bool,
    timeout: float,
) -> None:
    """Close a business day: installments fall due, late fees, auto-debits are asked for."""
    if command_id and len(loans) != 1:
        raise click.UsageError("--command-id needs exactly one --loan (ids are per command)")
    day = business_date.date()
    commands: list[CommandBase | CloseBusinessDayForPartition]
    if loans:
        commands = [
            _build(
                CloseBusinessDay,
                command_id=command_id or f"close-{day.isoformat()}-{loan}"[:64],
                loan_id=loan,
                business_date=day,
            )
            for loan in loans
        ]
    else:
        commands = [*_ticks(settings, day)]
    _deliver(settings, commands, as_json=as_json, wait=not no_wait, timeout_s=timeout)


def _ticks(settings: LedgerSettings, day: date) -> list[CloseBusinessDayForPartition]:
    from streams.client import business_day_ticks
    from streams.logread import partition_count

    return business_day_ticks(day, partition_count(settings, "ledger.commands"), datetime.now(UTC))


def _build(model: type[CommandBase], **fields: object) -> CommandBase:
    from pydantic import ValidationError

    try:
        return model.model_validate({**fields, "issued_at": datetime.now(UTC)}, strict=False)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise click.UsageError(f"invalid {model.__name__}: {problems}") from None


def _deliver(
    settings: LedgerSettings,
    commands: Sequence[CommandBase | CloseBusinessDayForPartition],
    *,
    as_json: bool,
    wait: bool,
    timeout_s: float,
) -> None:
    from streams.client import LedgerClient

    with LedgerClient(settings, watch_outcomes=wait) as client:
        client.send_many(commands)
        if not wait:
            for command in commands:
                _print_sent(command, as_json)
            return
        outcomes = [client.wait_for(c.command_id, timeout_s) for c in commands]
    for outcome in outcomes:
        _print_outcome(outcome, as_json)
    refused = sum(outcome.status is OutcomeStatus.REJECTED for outcome in outcomes)
    if refused:
        raise RefusedError(f"{refused} of {len(outcomes)} commands rejected")


def _print_sent(command: CommandBase | CloseBusinessDayForPartition, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"command_id": command.command_id, "status": "sent"}))
    else:
        click.echo(f"{command.command_id}: sent")


def _print_outcome(outcome: Outcome, as_json: bool) -> None:
    if as_json:
        click.echo(outcome.model_dump_json())
        return
    reason = f" ({outcome.reason})" if outcome.reason else ""
    events = f", {len(outcome.event_ids)} events" if outcome.event_ids else ""
    if outcome.loan_id is None:  # a partition's tick
        closed = f", {outcome.loans_closed} loans closed at once" if outcome.loans_closed else ""
        where = f"partition {outcome.partition}"
        click.echo(f"{where} {outcome.command_id}: {outcome.status}{reason}{closed}")
        return
    click.echo(f"{outcome.loan_id} {outcome.command_id}: {outcome.status}{reason}{events}")


COMMANDS: list[click.Command] = [open_loan, repay, close_day]
