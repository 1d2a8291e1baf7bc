#!/usr/bin/env python3
"""Django's own test suite under asyncguard: what fails only because the guard is installed.

Usage: python3 scripts/django_suite.py [--django SPEC] [--labels LABEL ...]
           [--modes baseline,warn,raise] [--parallel N] [--allow RULE] [--timeout S]
           [-- RUNTESTS ARGUMENTS]

It creates .venv-django-suite (asyncguard with greenlet, Django by --django, default 5.2, and
the packages of Django's tests/requirements/py3.txt that these test modules use), downloads
Django's sdist of the installed version from PyPI once and keeps its tests/ in
.django-suite/<version>/, then runs ``tests/runtests.py --settings=test_sqlite -v 2`` on the
labels (default: the modules with async code paths, about 2,100 tests) once per mode:
``baseline`` (no guard), ``warn`` and ``raise`` (``asyncguard.install(mode=..., json=...)``
before Django is imported).  It prints each mode's counts, the tests that fail only under the
guard -- in raise mode classified "blocking call" (the test ended with the guard's error where
it made a blocking call) or "other" (an assertion failed, or the guard's error replaced the one
``assertRaises`` expected) -- and the blocking call sites of the warn run: ``python -m
asyncguard report`` on its JSON file, then the same calls by their innermost frame inside
Django.  Exit status 1 when warn mode has a guard-only failure, raise mode one that is not a
blocking call, or a run did not finish.  Logs, JSON files, each violation with its test
(``<mode>.records``) and the parsed results are kept in .django-suite/<version>/runs/; a run
without ``baseline`` in --modes compares with the last baseline of the same labels.

--parallel defaults to 1: a mode takes about a minute on 2 CPUs, and the guard stays in one
process.  --parallel N works too: Django's runner forks its workers (the start method is set to
``fork``), which inherit the installed guard and the JSON file's O_APPEND descriptor; a pool
worker leaves by ``os._exit`` without atexit, so each one uninstalls the guard at its exit (a
multiprocessing finalizer), which writes its sites' counts; and a BlockingCallError raised in
an ``except TemplateDoesNotExist`` block (csrf_failure, the debug 500 page) gets its
unpicklable context cut, which would otherwise stop Django's whole parallel run.  Not part of
the default CI run.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _bootstrap import ROOT, ensure_venv

VENV = ".venv-django-suite"
CACHE = ROOT / ".django-suite"
DEFAULT_DJANGO = "django>=5.2,<5.3"
DEFAULT_LABELS = [
    "asgi",
    "async",
    "auth_tests",
    "sessions_tests",
    "view_tests",
    "mail",
    "decorators",
    "handlers",
]
MODES = ("baseline", "warn", "raise")
# what Django's tests/requirements/py3.txt lists that installs from PyPI and matters to these
# modules (the rest -- black, geoip2, numpy, pylibmc, pymemcache, pywatchman, redis, selenium --
# only skips tests of other modules or of services that are not running here)
TEST_PACKAGES = [
    "aiosmtpd",
    "argon2-cffi>=19.2.0",
    "bcrypt",
    "docutils>=0.19",
    "jinja2>=2.11.0",
    "Pillow>=6.2.1",
    "PyYAML",
    "sqlparse>=0.3.1",
    "tblib>=1.5.0",
    "tzdata",
]
# asyncguard's sentences (_violation.py): raise mode, warn mode, offload mode, stalls
GUARD_MESSAGE = re.compile(
    r"BlockingCallError|would block the event loop|blocked the event loop for "
    r"|the event loop (?:was|has been) blocked for "
)

# Run by ``python -c`` in the virtualenv, before Django is imported, with one argument (JSON:
# mode, json, records, allow, runtests, args).  In the guard modes it installs asyncguard,
# appends each violation with the running test and its frames inside Django to the records file
# (one JSON object a line), makes each forked test worker write its sites to the JSON file when
# it exits, and cuts exception chains the parallel runner cannot pickle.  Then it runs
# runtests.py as __main__.
BOOTSTRAP = r"""
import json, multiprocessing, multiprocessing.util, os, pickle, runpy, sys
config = json.loads(sys.argv[1])
runtests = config["runtests"]
sys.argv = [runtests, *config["args"]]
sys.path.insert(0, os.path.dirname(runtests))
if "fork" in multiprocessing.get_all_start_methods():
    multiprocessing.set_start_method("fork", force=True)  # workers inherit the guard
if config["mode"] != "baseline":
    import asyncguard
    record_fd = os.open(config["records"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    current = [None]
    django_dir = []

    def on_violation(violation):
        if not django_dir:
            import django
            django_dir.append(os.path.dirname(os.path.abspath(django.__file__)) + os.sep)
        base = os.path.dirname(django_dir[0].rstrip(os.sep))
        inside = []  # Django's frames between the call and the first frame of user code
        for frame in reversed(violation.stack):
            if (frame.filename, frame.lineno) == violation.location[:2]:
                break
            if os.path.abspath(frame.filename).startswith(django_dir[0]):
                where = os.path.relpath(frame.filename, base)
                inside.append(f"{where}:{frame.lineno} ({frame.name})")
        record = {
            "test": current[0],
            "pid": os.getpid(),
            "call": violation.call,
            "where": violation.describe(violation.location),
            "django": inside[:8],
            "ms": None if violation.duration is None else violation.duration * 1000,
            "message": violation.message()[:400],
        }
        os.write(record_fd, (json.dumps(record) + "\n").encode())

    asyncguard.install(
        mode=config["mode"], json=config["json"], allow=config["allow"], on_violation=on_violation
    )

    import unittest, unittest.suite
    start_test = unittest.TestResult.startTest
    class_setup = unittest.suite.TestSuite._handleClassSetUp

    def startTest(self, test):
        current[0] = test.id()
        start_test(self, test)

    def _handleClassSetUp(self, test, result):
        cls = test.__class__
        current[0] = f"{cls.__module__}.{cls.__qualname__}.setUpClass"
        class_setup(self, test, result)

    unittest.TestResult.startTest = startTest
    unittest.suite.TestSuite._handleClassSetUp = _handleClassSetUp

    import django.test.runner
    suite = django.test.runner.ParallelTestSuite
    init_worker = suite.init_worker
    check_picklable = django.test.runner.RemoteTestResult.check_picklable

    def guarded_init_worker(*args, **kwargs):
        init_worker(*args, **kwargs)
        # a pool worker ends with os._exit, without atexit: uninstalling writes its sites
        multiprocessing.util.Finalize(None, asyncguard.uninstall, exitpriority=100)

    def cut(exc, seen):
        for link in ("__cause__", "__context__"):
            linked = getattr(exc, link)
            if linked is None or id(linked) in seen:
                continue
            seen.add(id(linked))
            cut(linked, seen)  # the deepest links first
            try:
                pickle.dumps(linked)
            except Exception as problem:
                setattr(exc, link, None)
                exc.__suppress_context__ = link == "__context__" or exc.__suppress_context__
                if hasattr(exc, "add_note"):
                    exc.add_note(f"[django_suite.py cut its unpicklable {link}: {problem!r}]")

    def cut_unpicklable_chain(self, test, err):
        # a BlockingCallError raised in an except block has that block's exception as its
        # context; TemplateDoesNotExist (csrf_failure, the debug 500 page) holds template
        # engines, which don't pickle, and Django's parallel runner would stop the whole run
        try:
            self._confirm_picklable(err)
        except Exception:
            if err[1] is not None:
                cut(err[1], set())
        check_picklable(self, test, err)

    suite.init_worker = guarded_init_worker
    django.test.runner.RemoteTestResult.check_picklable = cut_unpicklable_chain
runpy.run_path(runtests, run_name="__main__")
"""

RULE = "=" * 70
DASH = "-" * 70
HEADER = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (\S+) \(([^)]*)\)(.*)$")
RAN = re.compile(r"^Ran (\d+) tests? in ([\d.]+)s$")
RESULT = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$")
CHAINED = ("Traceback (", "During handling of the above", "The above exception was")


@dataclass
class Problem:
    """One FAIL/ERROR block of unittest's closing summary."""

    kind: str  # FAIL, ERROR, UNEXPECTED SUCCESS
    test: str  # dotted id; a subtest's parameters follow after a space
    body: list[str]

    def exceptions(self) -> list[str]:
        """The first line of each exception in the chain, the last one raised last."""
        found = []
        after_traceback = False
        for line in self.body:
            if line.startswith("Traceback ("):
                after_traceback = True
            elif after_traceback and line and not line.startswith(" "):
                found.append(line)
                after_traceback = False
        return found

    def error_line(self) -> str:
        """The first line of the exception that ended the test (or of the failure's text)."""
        found = self.exceptions()
        if found:
            return found[-1]
        return next((line for line in self.body if line.strip()), "")

    def frames(self) -> list[tuple[str, int]]:
        """``(filename, lineno)`` of each frame of the last traceback, outermost first."""
        starts = [i for i, line in enumerate(self.body) if line.startswith("Traceback (")]
        lines = self.body[starts[-1] :] if starts else []
        return [(m[1], int(m[2])) for m in map(FRAME.match, lines) if m]

    def classify(self, tests: Path) -> tuple[str, str]:
        """``("blocking call", why)``: the test ended with the guard's error (BlockingCallError,
        or another class carrying asyncguard's message) where it made a blocking call;
        ``("other", why)``: anything else -- an assertion that failed (also one that quotes the
        guard's message: it saw the guard's error instead of what it expected), or the guard's
        error raised inside ``with self.assertRaises(X):``, which expected Django's own."""
        line = self.error_line()
        kind = line.split(":", 1)[0].strip()
        if not GUARD_MESSAGE.search(line) or kind.endswith(("AssertionError", "Failure")):
            return "other", "the test's own check failed"
        for filename, lineno in reversed(self.frames()):
            expected = expected_exception(tests, filename, lineno)
            if expected is not None:
                where = f"{rel_to(filename, tests)}:{lineno}"
                return (
                    "other",
                    f"{where} is inside assertRaises({expected}): the guard's error came instead",
                )
        return "blocking call", "the guard's error ended the test"


@dataclass
class Result:
    mode: str
    labels: list[str]
    args: list[str]
    seconds: float = 0.0
    finished: bool = False  # unittest printed its closing summary
    returncode: int | None = None
    found: int = 0  # "Found N test(s)."
    ran: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)


FRAME = re.compile(r'^  File "([^"]+)", line (\d+), in ')
RAISES = ("assertRaises", "assertRaisesMessage", "assertRaisesRegex")


@functools.cache
def _raises_blocks(filename: str) -> list[tuple[int, int, str]]:
    """``(first, last, expected)`` lines of each ``with self.assertRaises*(X...)`` body and each
    ``self.assertRaises*(X, callable, ...)`` call in a test module."""
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    blocks = []

    def expected(call: ast.expr) -> str | None:
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
            return None
        if call.func.attr not in RAISES or not call.args:
            return None
        return ast.unparse(call.args[0])

    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                name = expected(item.context_expr)
                if name is not None:
                    blocks.append((node.body[0].lineno, node.end_lineno or node.lineno, name))
        elif isinstance(node, ast.Call) and len(node.args) >= 2:
            name = expected(node)
            if name is not None:
                blocks.append((node.lineno, node.end_lineno or node.lineno, name))
    return blocks


def expected_exception(tests: Path, filename: str, lineno: int) -> str | None:
    """What ``assertRaises`` expected at ``filename:lineno``, if that line of the test suite
    is inside one."""
    if not os.path.abspath(filename).startswith(str(tests) + os.sep):
        return None
    inside = [b for b in _raises_blocks(filename) if b[0] <= lineno <= b[1]]
    return min(inside, key=lambda b: b[1] - b[0])[2] if inside else None


def rel_to(filename: str, base: Path) -> str:
    try:
        return str(Path(filename).relative_to(base))
    except ValueError:
        return filename


def test_id(name: str, inside: str, rest: str) -> str:
    """``test_x (pkg.mod.Class.test_x)`` (3.11+), ``test_x (pkg.mod.Class)`` (3.10),
    ``setUpClass (pkg.mod.Class)``: the dotted id, a subtest's parameters after a space."""
    dotted = inside if inside.endswith("." + name) else f"{inside}.{name}"
    rest = rest.strip()
    return f"{dotted} {rest}" if rest else dotted


def parse(result: Result, lines: list[str]) -> None:
    """unittest's closing summary: the FAIL/ERROR blocks, ``Ran N tests``, ``FAILED (...)``."""
    i = 0
    while i < len(lines):
        line = lines[i]
        match = HEADER.match(lines[i + 1]) if line == RULE and i + 1 < len(lines) else None
        if match:
            problem = Problem(match[1], test_id(match[2], match[3], match[4]), [])
            i += 2
            while i < len(lines) and lines[i] != RULE:
                if lines[i] == DASH and i + 1 < len(lines) and RAN.match(lines[i + 1]):
                    break
                problem.body.append(lines[i])
                i += 1
            while problem.body and not problem.body[-1].strip():
                problem.body.pop()
            result.problems.append(problem)
            continue
        found = re.match(r"^Found (\d+) test", line)
        if found:
            result.found = int(found[1])
        ran = RAN.match(line)
        if ran:
            result.ran = int(ran[1])
        done = RESULT.match(line)
        if done and result.ran:
            result.finished = True
            for item in (done[2] or "").split(", "):
                name, _, value = item.partition("=")
                if value.isdigit():
                    result.counts[name.strip()] = int(value)
        i += 1


def django_version(python: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('django'))"
    done = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def ensure_tests(python: Path, version: str) -> Path:
    """``.django-suite/<version>/tests``, from Django's sdist (downloaded once)."""
    home = CACHE / version
    tests = home / "tests"
    if (tests / "runtests.py").exists():
        return tests
    home.mkdir(parents=True, exist_ok=True)
    print(f"==> downloading Django {version}'s sdist (its test suite) into {home}", flush=True)
    with tempfile.TemporaryDirectory(dir=home) as tmp:
        pip = [str(python), "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        done = subprocess.run(
            [*pip, "--no-deps", "--no-binary", ":all:", f"django=={version}", "-d", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            sys.stderr.write(done.stdout + done.stderr)
            raise SystemExit(f"pip download of django=={version} failed (exit {done.returncode})")
        [sdist] = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if m.name.split("/")[1:2] == ["tests"]]
            if not members:
                raise SystemExit(f"{sdist.name} has no tests/ folder")
            if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+
                archive.extractall(tmp, members=members, filter="data")
            else:  # older patch releases: the members are Django's own, from PyPI
                archive.extractall(tmp, members=members)
        os.replace(Path(tmp) / members[0].name.split("/")[0] / "tests", tests)
    if not (tests / "runtests.py").exists():
        raise SystemExit(f"{tests} has no runtests.py")
    print(f"    kept in {tests}: later runs reuse it")
    return tests


@dataclass
class Run:
    """What one mode's run needs."""

    python: Path
    tests: Path
    runs: Path
    labels: list[str]
    args: list[str]
    allow: list[str]
    timeout: float


def run_mode(run: Run, mode: str) -> Result:
    log, jsonl, records = (run.runs / f"{mode}.{ext}" for ext in ("log", "jsonl", "records"))
    for stale in (log, jsonl, records):
        stale.unlink(missing_ok=True)
    args = ["--settings=test_sqlite", "--noinput", "-v", "2", *run.args, *run.labels]
    config = {
        "mode": mode,
        "json": str(jsonl),
        "records": str(records),
        "allow": run.allow,
        "runtests": str(run.tests / "runtests.py"),
        "args": args,
    }
    # the guard is configured by the bootstrap alone: no ASYNC_GUARD_* from this shell
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNC_GUARD_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    allow = f", allow={run.allow!r}" if run.allow else ""
    guard = f'asyncguard.install(mode="{mode}", json=...{allow}), then '
    guard = "" if mode == "baseline" else guard
    print(f"==> {mode}: {guard}runtests.py {' '.join(args)}", flush=True)
    result = Result(mode, run.labels, run.args)
    began = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [str(run.python), "-c", BOOTSTRAP, json.dumps(config)],
            cwd=run.tests,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group: its test workers stop with it
        )
        try:
            result.returncode = proc.wait(timeout=run.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"    stopped after {run.timeout:.0f} s (--timeout)")
    result.seconds = time.monotonic() - began
    parse(result, log.read_text(encoding="utf-8", errors="replace").splitlines())
    (run.runs / f"{mode}.json").write_text(json.dumps(asdict(result), indent=1))
    status = "finished" if result.finished else "did NOT finish"
    print(
        f"    {status} in {result.seconds:.0f} s: ran {result.ran}, "
        f"failures {result.count('failures')}, errors {result.count('errors')}, "
        f"skipped {result.count('skipped')} (exit {result.returncode}; log: {rel(log)})",
        flush=True,
    )
    return result


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def load_result(path: Path) -> Result | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        problems = [Problem(**p) for p in data.pop("problems")]
        return Result(**data, problems=problems)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def clip(text: str, width: int = 240) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = enumerate(zip(row, widths, strict=True))
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in cells))
    return lines


def print_counts(results: list[Result]) -> None:
    print("\n=== counts (unittest's; a subtest failure counts once per subtest)")
    rows = [["mode", "found", "ran", "failures", "errors", "skipped", "expected failures", "time"]]
    for r in results:
        rows.append(
            [
                r.mode + ("" if r.finished else " (did not finish)"),
                str(r.found),
                str(r.ran),
                str(r.count("failures")),
                str(r.count("errors")),
                str(r.count("skipped")),
                str(r.count("expected failures")),
                f"{r.seconds:.0f} s",
            ]
        )
    for line in table(rows):
        print("  " + line)
    for r in results:
        if r.finished and r.ran < r.found:
            print(
                f"  {r.mode}: {r.found - r.ran} of {r.found} tests did not run "
                "(an error in setUpClass/setUpModule skips the rest of its class or module)"
            )


def by_test(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        grouped[str(record.get("test"))].append(record)
    return grouped


def print_guard_only(
    result: Result, baseline: Result | None, records: list[dict[str, Any]], tests: Path
) -> list[str]:
    """Print the failures of ``result`` the baseline doesn't have; those that fail the run."""
    known = {p.test for p in baseline.problems} if baseline else set()
    only = [p for p in result.problems if p.test not in known]
    seen_in = by_test(records)
    verdicts = {id(p): p.classify(tests) for p in only} if result.mode == "raise" else {}
    kinds = Counter(kind for kind, _ in verdicts.values())
    split = f" ({', '.join(f'{n} {k}' for k, n in kinds.most_common())})" if kinds else ""
    print(f"\n=== {result.mode} mode: {len(only)} guard-only failures/errors{split}")
    bad = []
    for problem in only:
        kind, why = verdicts.get(id(problem), (None, ""))
        line = problem.error_line()
        print(f"  {problem.kind}{f' [{kind}]' if kind else ''}: {problem.test}")
        print(f"      {clip(line)}")
        if kind == "other":
            print(f"      ({why})")
        seen = seen_in.get(problem.test.split(" ")[0], [])
        raised = [r for r in seen if r["message"][:80] in line]
        shown = raised[-1] if raised else seen[0] if seen else None
        if shown is not None:
            inside = shown["django"][0] if shown.get("django") else "not inside Django"
            if raised:
                print(f"      inside Django: {inside}")
            else:
                calls = f"{len(seen)} call{'s' if len(seen) > 1 else ''}"
                print(f"      the guard saw {calls} in it, first {shown['call']} ({inside})")
        if kind != "blocking call":
            bad.append(f"{result.mode}: {problem.test}: {clip(line, 160)}")
    fixed = known - {p.test for p in result.problems}
    for test in sorted(fixed):
        print(f"  (fails in the baseline but not in {result.mode} mode: {test})")
    return bad


def print_sites(run: Run, jsonl: Path, records: list[dict[str, Any]], top: int) -> None:
    report = [str(run.python), "-m", "asyncguard", "report", str(jsonl)]
    print(f"\n=== blocking call sites in warn mode: python -m asyncguard report {rel(jsonl)}")
    if not jsonl.exists():
        print("  no JSON file: the guard reported nothing")
        return
    done = subprocess.run(
        [*report, "--json", "--top", "0"],
        cwd=run.tests,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        print(f"  the report failed (exit {done.returncode}): {done.stderr.strip()}")
        return
    sites = json.loads(done.stdout)["sites"]
    calls = Counter(site["call"] for site in sites)
    print(
        f"  {len(sites)} distinct sites (call key + first frame outside the libraries, here the"
        f" tests' own code), {sum(site['calls'] for site in sites)} calls; sites by call key:"
    )
    print("  " + ", ".join(f"{call} {n}" for call, n in calls.most_common()))
    text = subprocess.run(
        [*report, "--top", str(top)], cwd=run.tests, capture_output=True, text=True, check=False
    )
    print("\n".join(f"  {line}".rstrip() for line in text.stdout.splitlines()))
    if not records:
        return
    # the same calls seen from inside Django: the innermost Django frame and its Django callers
    inner: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        frames = record.get("django") or ["(no Django frame: the test's or a library's code)"]
        entry = inner.setdefault(
            (record["call"], frames[0]),
            {"calls": 0, "ms": 0.0, "tests": set(), "via": Counter()},
        )
        entry["calls"] += 1
        entry["ms"] += record.get("ms") or 0.0
        entry["tests"].add(record.get("test"))
        entry["via"][" <- ".join(frames[1:4])] += 1
    ranked = sorted(inner.items(), key=lambda kv: (-len(kv[1]["tests"]), -kv[1]["calls"], kv[0]))
    print(
        f"\n  {len(inner)} distinct (call key, innermost frame inside Django) pairs, by number of"
        f" tests{f' (top {top})' if len(inner) > top else ''}:"
    )
    for (call, frame), entry in ranked[:top]:
        via = entry["via"].most_common(1)[0][0]
        print(
            f"  {len(entry['tests']):4d} tests {entry['calls']:5d} calls {entry['ms']:8.1f} ms"
            f"  {call} at {frame}"
        )
        if via:
            print(f"  {'':35}<- {via}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Arguments after -- go to runtests.py, e.g.  -- --failfast --timing",
    )
    parser.add_argument(
        "--django", default=DEFAULT_DJANGO, help=f"pip requirement (default {DEFAULT_DJANGO!r})"
    )
    parser.add_argument(
        "--labels", nargs="+", default=DEFAULT_LABELS, help="runtests.py test labels"
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: baseline,warn,raise (all)"
    )
    parser.add_argument(
        "--parallel",
        default="1",
        help="runtests.py --parallel: 1 (default: about a minute a mode), N or auto",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="RULE",
        help='an allow rule for install(), e.g. "socket.getfqdn in aiosmtpd" (repeatable)',
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mode (900)")
    parser.add_argument("--top", type=int, default=25, help="call sites shown (25)")
    parser.add_argument("runtests_args", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args()
    modes = [m.strip() for m in options.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes takes a comma-separated list of {', '.join(MODES)}")

    began = time.monotonic()
    python = ensure_venv(VENV, "-e", f"{ROOT}[django,offload]", options.django, *TEST_PACKAGES)
    version = django_version(python)
    tests = ensure_tests(python, version)
    runs = CACHE / version / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run = Run(
        python=python,
        tests=tests,
        runs=runs,
        labels=options.labels,
        args=[f"--parallel={options.parallel}", *options.runtests_args],
        allow=options.allow,
        timeout=options.timeout,
    )
    print(f"==> Django {version}, {rel(tests)}: {' '.join(options.labels)}")

    results = {mode: run_mode(run, mode) for mode in MODES if mode in modes}
    baseline = results.get("baseline")
    shown = list(results.values())
    if baseline is None:
        previous = load_result(runs / "baseline.json")
        same = previous is not None and (previous.labels, previous.args) == (run.labels, run.args)
        if previous is not None and previous.finished and same:
            baseline = previous
            shown.insert(0, previous)
            print("==> baseline: the last run's (same labels and arguments)")
        else:
            print("==> no baseline with these labels and arguments: every failure is guard-only")
    print_counts(shown)
    if baseline is not None and baseline.problems:
        print(f"\n=== baseline failures/errors (not counted): {len(baseline.problems)}")
        for problem in baseline.problems:
            print(f"  {problem.kind}: {problem.test}\n      {clip(problem.error_line())}")

    problems = [f"{r.mode}: did not finish (exit {r.returncode})" for r in shown if not r.finished]
    for mode in ("warn", "raise"):
        if mode in results:
            records = read_records(runs / f"{mode}.records")
            problems += print_guard_only(results[mode], baseline, records, run.tests)
    if "warn" in results:
        records = read_records(runs / "warn.records")
        print_sites(run, runs / "warn.jsonl", records, options.top)

    print(f"\n{time.monotonic() - began:.0f} s in all")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems))
        return 1
    print("OK: no guard-only failure in warn mode; in raise mode only the guard's own errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
