"""The command line: ``python -m asyncguard report FILE [FILE ...]``.

``report`` reads the JSON-lines output (schema 1, docs/json-lines.md) of any number of processes
and prints the call sites that blocked the most.  It aggregates exactly as "Reading it" says:
``site`` lines are summed per (``call``, ``location``) across intervals and processes, their
histograms merged for the p95, their ``requests`` united; a process's ``violation`` lines after
its last ``flush`` line (all of them if it never flushed) count as one call each, since no
``site`` line includes them yet.  Lines are processed in file order, files in the order given,
so rotated files must be given oldest first.

Only the standard library is used here: the command must run wherever the log file is.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NoReturn

from ._histogram import Histogram
from ._wording import plural

__asyncguard_internal__ = True  # frames of this module are asyncguard's (_frames)

PROG = "python -m asyncguard"
SCHEMA = 1
SORT_KEYS = ("total", "calls", "p95", "max")
STDIN = "-"


class ReportError(Exception):
    """A problem that ends the command with exit status 2 and this message."""


class _MalformedLineError(Exception):
    """A line that is not a usable schema-1 object: skipped and counted."""


# -- reading ----------------------------------------------------------------------------------


def _raise_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _str(obj: dict[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise _MalformedLineError(key)
    return value


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _MalformedLineError(key)


def _int(obj: dict[str, Any], key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _MalformedLineError(key)
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _MalformedLineError(value)
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise _MalformedLineError(value)
    return number


def _ms(obj: dict[str, Any], key: str, default: float | None = None) -> float:
    return _number(obj.get(key, default))


def _opt_ms(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    return None if value is None else _number(value)


def _bool(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise _MalformedLineError(key)
    return value


def _str_list(obj: dict[str, Any], key: str) -> list[str]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _MalformedLineError(key)
    return value


def _pairs(obj: dict[str, Any], key: str) -> list[tuple[float, int]]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise _MalformedLineError(key)
    pairs = []
    for pair in value:
        if not isinstance(pair, list) or len(pair) != 2:
            raise _MalformedLineError(key)
        upper_ms, n = pair
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise _MalformedLineError(key)
        pairs.append((_number(upper_ms), n))
    return pairs


def _time(value: object) -> datetime | None:
    """An ISO 8601 time as written (``...Z``), or ``None``; 3.10's ``fromisoformat`` lacks Z."""
    if not isinstance(value, str):
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


@dataclass
class _Pending:
    """A ``violation`` line not (yet) covered by a ``site`` line of its process."""

    key: tuple[str, str]
    pid: int
    duration_ms: float | None
    request: str | None
    view: str | None


@dataclass
class Site:
    """One (call, location) summed over every interval and process."""

    call: str
    location: str
    category: str = ""
    function: str = ""
    calls: int = 0
    total_ms: float = 0.0
    max_ms: float | None = None
    histogram: Histogram = field(default_factory=Histogram)
    requests: set[str] = field(default_factory=set)
    requests_at_least: bool = False
    views: set[str] = field(default_factory=set)
    pids: set[int] = field(default_factory=set)

    def add_max(self, ms: float) -> None:
        self.max_ms = ms if self.max_ms is None else max(self.max_ms, ms)

    @property
    def timed(self) -> bool:
        """Whether any call here has a duration (raise mode records none)."""
        return self.histogram.total > 0 or bool(self.max_ms)

    @property
    def p95_ms(self) -> float | None:
        """The histogram's p95 bucket bound, never above the largest call seen."""
        p95 = self.histogram.percentile(0.95)
        if p95 is None or self.max_ms is None:
            return p95
        return min(p95, self.max_ms)

    def to_json(self) -> dict[str, object]:
        return {
            "call": self.call,
            "category": self.category,
            "location": self.location,
            "function": self.function,
            "calls": self.calls,
            "total_ms": round(self.total_ms, 3),
            "p95_ms": self.p95_ms,
            "max_ms": self.max_ms if self.timed else None,
            "requests": len(self.requests),
            "requests_at_least": self.requests_at_least,
            "views": sorted(self.views),
            "processes": len(self.pids),
        }


@dataclass
class Report:
    """Everything read from the files: :meth:`read` each file in order, then
    :meth:`finish`."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    skipped: int = 0
    first_skipped: str | None = None
    pids: set[int] = field(default_factory=set)
    start: datetime | None = None
    end: datetime | None = None
    overflow_count: int = 0
    overflow_ms: float = 0.0
    suppressed: int = 0
    sites: dict[tuple[str, str], Site] = field(default_factory=dict)
    # the latest (category, function) seen per site, in file order
    _meta: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    # per pid, its violation lines since its last flush line
    _pending: dict[int, list[_Pending]] = field(default_factory=dict)

    def read(self, name: str, stream: Iterable[bytes]) -> None:
        """Add one file's records; a file with lines but no asyncguard record at all is the
        wrong file (``ReportError``), a few malformed lines in a good one are skipped."""
        self.files.append(name)
        before, skipped = self.lines, self.skipped
        for lineno, raw in enumerate(stream, 1):
            if not raw.strip():
                continue
            where = f"{name}:{lineno}"
            try:
                self._line(raw, where)
            except _MalformedLineError:
                self.skipped += 1
                if self.first_skipped is None:
                    self.first_skipped = where
        if self.lines == before and self.skipped > skipped:
            shown = "<stdin>" if name == STDIN else name
            raise ReportError(
                f"'{shown}' is not an asyncguard JSON-lines file: none of its "
                f"{plural(self.skipped - skipped, 'line')} is an asyncguard record "
                "(give the file ASYNC_GUARD_JSON or the json option wrote)"
            )

    def _line(self, raw: bytes, where: str) -> None:
        try:
            obj = json.loads(raw, parse_constant=_raise_constant)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
            raise _MalformedLineError(where) from None
        if not isinstance(obj, dict):
            raise _MalformedLineError(where)
        schema = obj.get("schema")
        if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
            raise _MalformedLineError(where)
        if schema > SCHEMA:
            raise ReportError(
                f"{where} has schema {schema}; this asyncguard reads schema {SCHEMA}"
                " — upgrade asyncguard"
            )
        kind = _str(obj, "type")
        if kind == "site":
            self._site(obj)
        elif kind == "violation":
            self._violation(obj)
        elif kind == "flush":
            self._flush(obj)
        else:
            return  # a later minor version's line type: ignored
        self.lines += 1
        self._seen(_int(obj, "pid"), obj.get("time"), obj.get("since"))

    def _seen(self, pid: int, time: object, since: object) -> None:
        self.pids.add(pid)
        for value in (since, time):
            moment = _time(value)
            if moment is not None:
                self.start = moment if self.start is None else min(self.start, moment)
                self.end = moment if self.end is None else max(self.end, moment)

    def _key(self, obj: dict[str, Any]) -> tuple[str, str]:
        key = (_str(obj, "call"), _str(obj, "location"))
        self._meta[key] = (_str(obj, "category", ""), _str(obj, "function", ""))
        return key

    def _site(self, obj: dict[str, Any]) -> None:
        # validate the whole line before touching the totals
        pid = _int(obj, "pid")
        count = _int(obj, "count")
        total_ms = _ms(obj, "total_ms")
        max_ms = _ms(obj, "max_ms")
        pairs = _pairs(obj, "histogram")
        requests = _str_list(obj, "requests")
        truncated = _bool(obj, "requests_truncated")
        views = _str_list(obj, "views")
        key = self._key(obj)
        site = self._get(key)
        site.calls += count
        site.total_ms += total_ms
        site.add_max(max_ms)
        site.histogram.merge_pairs(pairs)
        site.requests.update(requests)
        site.requests_at_least |= truncated
        site.views.update(views)
        site.pids.add(pid)

    def _violation(self, obj: dict[str, Any]) -> None:
        pending = _Pending(
            key=(_str(obj, "call"), _str(obj, "location")),
            pid=_int(obj, "pid"),
            duration_ms=_opt_ms(obj, "duration_ms"),
            request=_opt_str(obj, "request"),
            view=_opt_str(obj, "view"),
        )
        self._key(obj)
        self._pending.setdefault(pending.pid, []).append(pending)

    def _flush(self, obj: dict[str, Any]) -> None:
        pid = _int(obj, "pid")
        overflow_count = _int(obj, "overflow_count", 0)
        overflow_ms = _ms(obj, "overflow_ms", 0.0)
        suppressed = _int(obj, "suppressed", 0)
        self.overflow_count += overflow_count
        self.overflow_ms += overflow_ms
        self.suppressed += suppressed
        # this flush's site lines include every call of the pid so far
        self._pending.pop(pid, None)

    def _get(self, key: tuple[str, str]) -> Site:
        site = self.sites.get(key)
        if site is None:
            site = self.sites[key] = Site(*key)
        return site

    def finish(self) -> None:
        """Count the violations no ``site`` line covers (their process died before flushing)."""
        for pending in self._pending.values():
            for violation in pending:
                site = self._get(violation.key)
                site.calls += 1
                if violation.duration_ms is not None:
                    site.total_ms += violation.duration_ms
                    site.add_max(violation.duration_ms)
                    site.histogram.add(violation.duration_ms)
                if violation.request is not None:
                    site.requests.add(violation.request)
                if violation.view is not None:
                    site.views.add(violation.view)
                site.pids.add(violation.pid)
        self._pending.clear()
        for key, site in self.sites.items():
            site.category, site.function = self._meta[key]

    def ranked(self, sort: str) -> list[Site]:
        def order(site: Site) -> tuple[float, float, str, str]:
            p95, top = site.p95_ms, site.max_ms if site.timed else None
            primary, secondary = {
                "total": (site.total_ms, site.calls),
                "calls": (site.calls, site.total_ms),
                "p95": (-1.0 if p95 is None else p95, site.total_ms),
                "max": (-1.0 if top is None else top, site.total_ms),
            }[sort]
            return (-primary, -secondary, site.call, site.location)

        return sorted(self.sites.values(), key=order)


# -- printing ---------------------------------------------------------------------------------


def _digits3(x: float) -> str:
    """``x`` with three significant digits (``1.23``, ``45.6``, ``789``), no exponent."""
    if x < 1:
        return f"{x:.2g}" if x < 0.995 else "1.00"
    for decimals in (2, 1):
        text = f"{x:.{decimals}f}"
        if len(text.split(".")[0]) + decimals <= 3:
            return text
    return f"{x:.0f}"


def human_ms(ms: float | None) -> str:
    """``45.6 ms``, ``1.23 s``; ``-`` for no timing."""
    if ms is None:
        return "-"
    if ms < 999.5:
        return f"{_digits3(ms)} ms"
    return f"{_digits3(ms / 1000)} s"


def _human_span(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _files_label(files: list[str]) -> str:
    names = ["<stdin>" if name == STDIN else name for name in files]
    return names[0] if len(names) == 1 else plural(len(names), "file")


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


def _span(report: Report) -> str:
    if report.start is None or report.end is None:
        return ""
    start, end = _utc(report.start), _utc(report.end)
    end_format = "%H:%M:%S" if start.date() == end.date() else "%Y-%m-%d %H:%M:%S"
    length = _human_span((end - start).total_seconds())
    return f", {start:%Y-%m-%d %H:%M:%S} to {end.strftime(end_format)} UTC ({length})"


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return _utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_text(report: Report, sites: list[Site]) -> str:
    out = [
        f"asyncguard report: {plural(report.lines, 'line')} from "
        f"{plural(len(report.pids), 'process', 'processes')} in "
        f"{_files_label(report.files)}{_span(report)}",
        "",
    ]
    rows = [["#", "site", "calls", "total", "p95", "max", "labels"]]
    for rank, site in enumerate(sites, 1):
        requests = len(site.requests)
        rows.append(
            [
                str(rank),
                f"{site.call} at {site.location} ({site.function})",
                str(site.calls),
                human_ms(site.total_ms if site.timed else None),
                human_ms(site.p95_ms),
                human_ms(site.max_ms if site.timed else None),
                f"{requests}{'+' if site.requests_at_least else ''}" if requests else "-",
            ]
        )
    out += _table(rows, right={0, 2, 3, 4, 5, 6})
    footer = []
    hidden = len(report.sites) - len(sites)
    if hidden:
        footer.append(f"{plural(hidden, 'more site')} not shown (--top 0 shows all)")
    if any(site.requests_at_least for site in sites):
        footer.append(
            "labels: distinct METHOD + path of the requests; N+: at least N (more than listed)"
        )
    if report.overflow_count:
        footer.append(
            f"plus {plural(report.overflow_count, 'call')} ({human_ms(report.overflow_ms)}) "
            "at untracked sites: the site table was full (raise max_sites)"
        )
    if report.suppressed:
        footer.append(
            f"{plural(report.suppressed, 'log line')} suppressed by the rate limit "
            "(the counts above include their calls)"
        )
    if footer:
        out += ["", *footer]
    return "\n".join(out)


def format_json(report: Report, sites: list[Site]) -> str:
    document = {
        "schema": SCHEMA,
        "sites": [site.to_json() for site in sites],
        "files": list(report.files),
        "skipped_lines": report.skipped,
        "lines": report.lines,
        "processes": len(report.pids),
        "since": _iso(report.start),
        "until": _iso(report.end),
        "overflow_count": report.overflow_count,
        "overflow_ms": round(report.overflow_ms, 3),
        "suppressed": report.suppressed,
    }
    return json.dumps(document, indent=2)


# -- the command ------------------------------------------------------------------------------


def _open(name: str, stack: ExitStack) -> Iterable[bytes]:
    if name == STDIN:
        return sys.stdin.buffer
    try:
        if name.endswith(".gz"):  # logrotate's `compress`
            return stack.enter_context(gzip.open(name, "rb"))
        return stack.enter_context(open(name, "rb"))
    except OSError as exc:
        raise ReportError(f"can't open '{name}': {exc.strerror or exc}") from None


def _read(files: Sequence[str]) -> Report:
    report = Report()
    with ExitStack() as stack:
        # open them all first: a mistyped name fails before a long read
        streams = [(name, _open(name, stack)) for name in files]
        for name, stream in streams:
            try:
                report.read(name, stream)
            except (OSError, EOFError) as exc:  # a corrupt or truncated .gz, a read error
                raise ReportError(f"can't read '{name}': {exc}") from None
    report.finish()
    return report


def _report(args: argparse.Namespace) -> int:
    report = _read(args.files)
    if report.skipped:
        print(
            f"skipped {plural(report.skipped, 'malformed line')}"
            f" (the first at {report.first_skipped})",
            file=sys.stderr,
        )
    sites = report.ranked(args.sort)
    if args.top:
        sites = sites[: args.top]
    if args.json:
        print(format_json(report, sites))
    elif not report.sites and not report.overflow_count:
        names = ", ".join("<stdin>" if name == STDIN else name for name in report.files)
        print(f"no blocking calls recorded in {names}")
    else:
        print(format_text(report, sites))
    return 0


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="asyncguard: find blocking calls on event-loop threads."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    report = commands.add_parser(
        "report",
        help="the call sites that blocked the most, from JSON-lines output",
        description=(
            "Sum the JSON-lines output (schema 1) of any number of processes per call site "
            "and print the top offenders.  Give rotated files oldest first."
        ),
    )
    report.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="a JSON-lines file written by asyncguard (.gz is read too); - for standard input",
    )
    report.add_argument("--json", action="store_true", help="print a JSON object instead")
    report.add_argument(
        "--top", type=_top, default=20, metavar="N", help="show N sites (default 20; 0: all)"
    )
    report.add_argument(
        "--sort", choices=SORT_KEYS, default="total", help="rank by this column (default total)"
    )
    report.set_defaults(handler=_report, command_name="report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ReportError as exc:
        print(f"{PROG} {args.command_name}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `... | head` stopped reading
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 1
    except KeyboardInterrupt:
        return 130
