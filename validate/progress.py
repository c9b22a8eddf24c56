"""Progress of the phases of a run on stderr: a bar on a terminal, a line per phase in a log.

A command picks the reporter (:func:`reporting`) and the code it runs finds it through a context
variable, so the engine's functions take no extra parameter: :func:`validate.metrics.metrics_report`
reports its blocks, :func:`validate.calibrators.compare_calibration` its designs and
:mod:`validate.pipeline` the other phases of ``validate run``. Three modes:

- ``bar``: stderr is a terminal (and ``CI`` is not set): the running phase is one line rewritten in
  place (``metrics [#####.....] 7/14 blocks · sites/B · 3.2 s``); when the phase ends the line is
  replaced by its summary line, so what stays on the screen is what a log holds.
- ``lines``: stderr is not a terminal, or the environment variable ``CI`` is ``true`` or ``1`` (as CI
  services set it): one summary line per phase when it ends (``metrics: 14 blocks in 8.2 s``), and
  a heartbeat line (``metrics: 7/14 blocks, 30 s so far``) at most every :data:`HEARTBEAT_S` seconds
  while a long phase runs, so a CI log never looks hung.
- ``off``: ``--quiet``, and every library call made outside a command (a notebook calling
  ``validate.run_protocol``); errors and the verdict are printed by the command, not here.

A phase opened inside another (the metric blocks of the subgroup analysis) is that phase's detail: it
shows in the outer phase's bar and heartbeat, and its counts are summed into the outer phase's summary
line (``subgroups: 24 blocks in 12.0 s``); it prints no line of its own.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

MODES = ("bar", "lines", "off")
#: Seconds between heartbeat lines of a running phase in ``lines`` mode.
HEARTBEAT_S = 30.0
#: Seconds between redraws of the bar (a terminal redrawn faster only flickers).
REDRAW_S = 0.1
BAR_CELLS = 20


def ci_environment() -> bool:
    """Whether the environment says this is a CI run (``CI`` is ``true`` or ``1``)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def choose_mode(quiet: bool = False, stream: TextIO | None = None) -> str:
    """``off`` when quiet, ``bar`` on a terminal outside CI, else ``lines``."""
    if quiet:
        return "off"
    stream = stream if stream is not None else sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or foreign stream: no terminal
        tty = False
    return "bar" if tty and not ci_environment() else "lines"


def seconds_text(s: float) -> str:
    """Elapsed time as people read it: ``0.4 s``, ``12.3 s``, ``2 min 05 s``."""
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def _count(n: int, unit: str) -> str:
    """``14 blocks``, ``1 block`` (units are given in the plural), ``1,200 cases``."""
    if n == 1 and unit.endswith("s"):
        unit = unit[:-1]
    return f"{n:,} {unit}" if unit else f"{n:,}"


@dataclass(eq=False)
class Phase:
    """One phase: ``done`` of ``total`` ``unit`` (total None when unknown), the detail of what it works
    on now, and the counts its finished inner phases added (per unit)."""

    name: str
    total: int | None = None
    unit: str = ""
    live: bool = True
    done: int = 0
    detail: str = ""
    note: str = ""
    start: float = field(default_factory=time.perf_counter)
    inner: dict[str, int] = field(default_factory=dict)
    _reporter: Reporter | None = None

    def advance(self, n: int = 1, detail: str | None = None) -> None:
        """``n`` more units done; ``detail`` names what comes next (a block, a design)."""
        self.done += n
        if detail is not None:
            self.detail = detail
        if self._reporter is not None:
            self._reporter.changed()

    def set_total(self, total: int | None, unit: str | None = None) -> None:
        self.total = total
        if unit is not None:
            self.unit = unit
        if self._reporter is not None:
            self._reporter.changed()

    def finish(self) -> None:
        """End a phase begun with :func:`start` (a phase of a ``with`` block ends by itself)."""
        if self._reporter is not None:
            self._reporter.close(self)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def counts(self) -> str:
        """``14 blocks`` (own count, then the inner phases' counts per unit), or ``""``."""
        parts = []
        if self.done or self.total:
            parts.append(_count(self.done, self.unit))
        parts += [_count(n, unit) for unit, n in self.inner.items() if unit != self.unit or not parts]
        return ", ".join(parts)

    def progress_text(self) -> str:
        """``7/14 blocks`` while running (``7 blocks`` without a total)."""
        if self.total:
            return f"{self.done:,}/{self.total:,} {self.unit}".rstrip()
        return _count(self.done, self.unit) if self.done else ""

    def summary(self) -> str:
        """The phase's line when it ends: ``metrics: 14 blocks in 8.2 s · note``."""
        counts = self.counts()
        text = f"{self.name}: {counts + ' in ' if counts else 'done in '}{seconds_text(self.elapsed())}"
        return f"{text} · {self.note}" if self.note else text


class Reporter:
    """Writes the phases' progress to ``stream`` in ``mode`` (see the module docstring)."""

    def __init__(self, mode: str, stream: TextIO | None = None, heartbeat_s: float = HEARTBEAT_S):
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.heartbeat_s = heartbeat_s
        self.stack: list[Phase] = []
        self._drawn = False
        self._last_draw = 0.0
        self._last_beat = 0.0

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def open(self, phase: Phase) -> Phase:
        if self.enabled:
            phase._reporter = self
            self.stack.append(phase)
            if len(self.stack) == 1:
                self._last_beat = time.perf_counter()
            self.changed(force=True)
        return phase

    def close(self, phase: Phase, failed: bool = False) -> None:
        if not self.enabled or phase not in self.stack:
            return
        while self.stack and self.stack[-1] is not phase:  # an inner phase left open by an exception
            self.stack.pop()
        self.stack.pop()
        phase._reporter = None
        if self.stack:
            outer = self.stack[-1]
            if phase.done:
                outer.inner[phase.unit] = outer.inner.get(phase.unit, 0) + phase.done
            for unit, n in phase.inner.items():
                outer.inner[unit] = outer.inner.get(unit, 0) + n
            self.changed(force=True)
            return
        if failed:  # the command's one error line says why; a progress line would make it two
            if self._drawn:
                self._emit("\r\x1b[K")
                self._drawn = False
        else:
            self._write_line(phase.summary())

    def changed(self, force: bool = False) -> None:
        """Redraw the bar (``bar``), or write a heartbeat line when one is due (``lines``)."""
        if not self.stack:
            return
        now = time.perf_counter()
        if self.mode == "bar":
            if self.stack[0].live and (force or now - self._last_draw >= REDRAW_S):
                self._last_draw = now
                self._draw()
        elif self.mode == "lines" and now - self._last_beat >= self.heartbeat_s:
            self._last_beat = now
            self._print(self._heartbeat())

    def _heartbeat(self) -> str:
        top = self.stack[0]
        parts = [p for p in (top.progress_text(), self._inner_text()) if p]
        so_far = f"{seconds_text(top.elapsed())} so far"
        return f"{top.name}: {', '.join(parts + [so_far])}"

    def _inner_text(self) -> str:
        inner = self.stack[-1]
        if inner is self.stack[0]:
            return inner.detail
        return " ".join(p for p in (inner.name, inner.progress_text(), inner.detail) if p)

    def _bar_text(self, width: int) -> str:
        top = self.stack[0]
        cells = ""
        if top.total:
            filled = min(BAR_CELLS, int(BAR_CELLS * top.done / top.total))
            cells = f"[{'#' * filled}{'.' * (BAR_CELLS - filled)}] "
        parts = [p for p in (top.progress_text(), self._inner_text(), seconds_text(top.elapsed())) if p]
        text = f"{top.name} {cells}{' · '.join(parts)}"
        return text if len(text) < width else text[: max(width - 2, 1)] + "…"

    def _width(self) -> int:
        # the terminal stderr is on (stdout may be a file); COLUMNS or 100 where it says nothing
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = 0
        return columns or shutil.get_terminal_size((100, 24)).columns

    def _draw(self) -> None:
        self._emit("\r\x1b[K" + self._bar_text(self._width()))
        self._drawn = True

    def _write_line(self, text: str) -> None:
        if self._drawn:  # the bar's line becomes the summary line
            self._emit("\r\x1b[K")
            self._drawn = False
        self._print(text)

    def _print(self, text: str) -> None:
        self._emit(text + "\n")

    def _emit(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed pipe must not end the run
            pass


_OFF = Reporter("off")
_CURRENT: contextvars.ContextVar[Reporter] = contextvars.ContextVar("validate_progress", default=_OFF)


def current() -> Reporter:
    """The reporter of the running command (``off`` outside :func:`reporting`)."""
    return _CURRENT.get()


def active() -> bool:
    """Whether a command installed a reporter (quiet or not): library calls outside one keep their
    own defaults (scoring's bar on a terminal)."""
    return _CURRENT.get() is not _OFF


@contextlib.contextmanager
def reporting(quiet: bool = False, stream: TextIO | None = None, mode: str | None = None) -> Iterator[Reporter]:
    """Install a reporter for the block: ``mode`` as given, else :func:`choose_mode`."""
    reporter = Reporter(mode or choose_mode(quiet, stream), stream)
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def phase(name: str, total: int | None = None, unit: str = "", *, live: bool = True) -> Iterator[Phase]:
    """A phase of the running command: ``with phase("metrics", total=14, unit="blocks") as p:
    ... p.advance(detail="sites/B")``. ``live=False``: no bar of its own while it runs (a phase whose
    work draws its own, as scoring does), only its summary line."""
    reporter = current()
    p = reporter.open(Phase(name=name, total=total, unit=unit, live=live))
    try:
        yield p
    except BaseException:
        reporter.close(p, failed=True)
        raise
    reporter.close(p)


def start(name: str, total: int | None = None, unit: str = "") -> Phase:
    """A phase begun here and ended by :meth:`Phase.finish`: for a loop that a ``with`` block would
    re-indent. Left unfinished by an exception, it is closed with the phase around it."""
    return current().open(Phase(name=name, total=total, unit=unit))


def scoring_bar() -> bool | None:
    """The ``progress`` argument for :func:`validate.scoring.score_protocol`: its own bar only in
    ``bar`` mode; None (its default: on a terminal) when no command installed a reporter."""
    if not active():
        return None
    return current().mode == "bar"


def command(run: Callable[[Any], int]) -> Callable[[Any], int]:
    """A command's ``run(args)`` with the progress of what it runs on stderr, silenced by
    ``args.quiet`` (``--quiet``)."""

    @functools.wraps(run)
    def with_progress(args: Any) -> int:
        with reporting(quiet=bool(getattr(args, "quiet", False))):
            return run(args)

    return with_progress


QUIET_HELP = "no progress on stderr (errors and results still print)"
