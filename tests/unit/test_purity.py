"""The functional core stays pure: `ledger/` does no I/O, reads no clock or dice, and never
imports the shell.

Every `.py` under `ledger/`, with no exemption, is parsed with `ast`: it may not import
`streams`, a Kafka, HTTP, file, OS, logging, threading, clock or randomness module (relative
imports are resolved first), nor call `open()`, `print()`, `input()`, `datetime.now()`,
`date.today()`, `time.time()`, `uuid.uuid1()`/`uuid4()` or anything in `random`, however the
name was imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ledger

FORBIDDEN_MODULES = frozenset(
    {
        "streams",
        "faust",
        "confluent_kafka",
        "aiokafka",
        "aiohttp",
        "os",
        "sys",
        "logging",
        "random",
        "time",
        "socket",
        "subprocess",
        "threading",
        "asyncio",
        "requests",
        "httpx",
        "urllib",
        "http",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "signal",
        "multiprocessing",
        "click",
        "rich",
        "prometheus_client",
        "pyarrow",
        "matplotlib",
    }
)
# Dotted suffixes of calls that read the clock or draw randomness; `random.*` is banned whole.
FORBIDDEN_CALLS = (
    "datetime.now",
    "datetime.utcnow",
    "datetime.today",
    "date.today",
    "time.time",
    "uuid.uuid1",
    "uuid.uuid4",
)
# Built-ins that read or write a file or the terminal.
FORBIDDEN_BUILTINS = frozenset({"open", "print", "input", "breakpoint"})
LEDGER_ROOT = Path(ledger.__file__).parent


def domain_modules() -> list[Path]:
    return sorted(LEDGER_ROOT.rglob("*.py"))


def _package_of(path: Path) -> str:
    """The dotted package a module lives in, e.g. ledger/x/y.py -> ledger.x."""
    parts = path.relative_to(LEDGER_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1])


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module of a `from ... import`, relative ones resolved against `package`."""
    if node.level == 0:
        return node.module or ""
    base = package.split(".")
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, node.module] if node.module else base)


def _imported(tree: ast.AST, package: str) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from every import in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                local = alias.asname or alias.name.split(".")[0]
                names[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{module}.{alias.name}".lstrip(".")
    return names


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of attributes on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _import_violations(tree: ast.AST, package: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            # `from . import os` names a module too: check both the package and each name.
            modules = [module, *(f"{module}.{alias.name}".lstrip(".") for alias in node.names)]
        else:
            continue
        banned = [m for m in modules if m.split(".")[0] in FORBIDDEN_MODULES]
        if banned:
            found.append(f"line {node.lineno}: imports {banned[0]}")
    return found


def _call_violations(tree: ast.AST, package: str) -> list[str]:
    names = _imported(tree, package)
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        written = _dotted(node.func)
        if written is None:
            continue
        if written in FORBIDDEN_BUILTINS and written not in names:
            found.append(f"line {node.lineno}: calls {written}()")
            continue
        head, _, rest = written.partition(".")
        meant = ".".join(filter(None, [names.get(head, head), rest]))
        for name in {written, meant}:
            banned = name.startswith("random.") or any(
                name == call or name.endswith("." + call) for call in FORBIDDEN_CALLS
            )
            if banned:
                found.append(f"line {node.lineno}: calls {written}() ({meant})")
                break
    return found


def violations(source: str, package: str = "ledger") -> list[str]:
    """Every forbidden import or call in `source`, a module of `package`."""
    tree = ast.parse(source)
    return _import_violations(tree, package) + _call_violations(tree, package)


def test_there_are_domain_modules_to_check() -> None:
    names = {p.name for p in domain_modules()}
    assert {"decide.py", "evolve.py", "deduction.py", "state.py", "sequence.py"} <= names


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(LEDGER_ROOT)))
def test_domain_module_is_pure(path: Path) -> None:
    assert violations(path.read_text(), _package_of(path)) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time\n", "imports time"),
        ("import os.path\n", "imports os.path"),
        ("from confluent_kafka import Producer\n", "imports confluent_kafka"),
        ("from faust.types import AppT\n", "imports faust.types"),
        ("from streams.settings import LedgerSettings\n", "imports streams.settings"),
        ("from pathlib import Path\n", "imports pathlib"),
        ("x = open('f')\n", "calls open()"),
        ("print('x')\n", "calls print()"),
        ("from .. import logging\n", "imports logging"),
        ("from datetime import datetime\nx = datetime.now()\n", "calls datetime.now()"),
        ("import datetime\nx = datetime.datetime.utcnow()\n", "calls datetime.datetime.utcnow()"),
        (
            "from datetime import date as d\nx = d.today()\n",
            "calls d.today() (datetime.date.today)",
        ),
        ("from uuid import uuid4\nx = uuid4()\n", "calls uuid4() (uuid.uuid4)"),
        ("import uuid as u\nx = u.uuid1()\n", "calls u.uuid1() (uuid.uuid1)"),
        ("from time import time as clock\nx = clock()\n", "calls clock() (time.time)"),
        ("x = random.randint(1, 6)\n", "calls random.randint()"),
    ],
)
def test_the_checker_finds_a_violation(source: str, expected: str) -> None:
    assert any(expected in found for found in violations(source)), violations(source)


def test_the_checker_allows_what_the_core_needs() -> None:
    source = (
        "import hashlib\nimport uuid\nfrom datetime import date, timedelta\n"
        "from . import accounts\nfrom .money import round_half_up\n"
        "x = uuid.uuid5(uuid.NAMESPACE_URL, 'a')\ny = date(2026, 1, 1) + timedelta(days=1)\n"
    )
    assert violations(source) == []
