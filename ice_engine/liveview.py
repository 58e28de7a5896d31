"""What `ice-engine gather` shows: a live Trickle ICE table on a terminal, plain lines elsewhere.

Both views are fed the same events through `add(event)` and close with `finish()`, which
prints a per-server summary: when each server gave its first candidate, how many it gave,
and its errors: a candidate event names the server it came from (`url`), as an error does.

The live view uses `rich` and is drawn from the asyncio thread only (no refresh thread):
`tick()` redraws it, so the spinner turns while the gatherer waits for servers, but no more
often than `_REDRAW_EVERY`: a redraw costs in proportion to the rows and holds the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from .events import (
    CandidateRemovedEvent,
    Event,
    IceCandidate,
    IceCandidateErrorEvent,
    IceCandidateEvent,
    IceGatheringStateChangeEvent,
)
from .urls import hostport

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod, RenderableType
    from rich.live import Live
    from rich.table import Table


_STATUS_STYLES = {"failed": "red", "partly failed": "yellow"}
_HEADLINES = {"complete": "[bold green]✓ complete[/]", "failed": "[bold red]✗ failed[/]"}
_SUMMARY_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("URL", "left"),
    ("Status", "left"),
    ("First candidate", "right"),
    ("Candidates", "right"),
    ("Errors", "right"),
)


def printable(text: str) -> str:
    """A server's words, with control characters escaped: they must not drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


__all__ = [
    "LiveView",
    "PlainView",
    "ServerStats",
    "Summary",
    "format_event",
    "printable",
]


@dataclass(slots=True)
class ServerStats:
    """What one server gave during gathering (all generations)."""

    url: str
    first_candidate: float | None = None
    """Seconds from the start of its generation to its first candidate."""
    candidates: int = 0
    types: dict[str, int] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)
    pending: bool = False
    """Interrupted while the gatherer still waited on it (`Gatherer.waiting_for`)."""

    @property
    def status(self) -> str:
        if self.candidates:  # a TURN server's srflx, say, with its allocation refused
            return "partly failed" if self.errors else "ok"
        if self.errors:
            return "failed"
        return "no answer yet" if self.pending else "no new candidates"


class Summary:
    """Counts over the event stream: per server, per candidate type, per generation."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.servers = [ServerStats(url) for url in dict.fromkeys(urls)]  # a URL given twice
        self.by_url: dict[str, ServerStats] = {s.url: s for s in self.servers}
        self.types: dict[str, int] = {}
        self.candidates = 0
        self.removed = 0  # candidates gathered, then gone (continual gathering)
        self.errors = 0
        self.generations = 0
        self.last_t = 0.0

    def add(self, event: Event) -> None:
        self.last_t = max(self.last_t, event.t)
        if isinstance(event, IceGatheringStateChangeEvent):
            if event.state.value == "gathering":
                self.generations += 1
        elif isinstance(event, CandidateRemovedEvent):
            self.removed += 1
        elif isinstance(event, IceCandidateErrorEvent):
            self.errors += 1
            stats = self._server(event.url)
            stats.errors.append((event.errorCode, printable(event.errorText)))
        elif isinstance(event, IceCandidateEvent) and event.candidate is not None:
            candidate = event.candidate
            if candidate.parsed is None:
                return
            self.candidates += 1
            kind = candidate.parsed.type
            self.types[kind] = self.types.get(kind, 0) + 1
            if event.url is not None:  # learnt from a server (host candidates are not)
                server = self._server(event.url)
                server.candidates += 1
                server.types[kind] = server.types.get(kind, 0) + 1
                if server.first_candidate is None:
                    server.first_candidate = event.t

    def stop(self, waiting: Sequence[str]) -> None:
        """Interrupted while the gatherer still waited on the servers in `waiting`: they
        have not answered yet, where the others answered (or failed) with what they show."""
        for url in waiting:
            self._server(url).pending = True

    def _server(self, url: str) -> ServerStats:
        stats = self.by_url.get(url)
        if stats is None:  # a URL spelt otherwise than given: its own line
            stats = self.by_url[url] = ServerStats(url)
            self.servers.append(stats)
        return stats

    def heard_from(self) -> int:
        return sum(1 for s in self.servers if s.candidates or s.errors)

    def type_counts(self) -> str:
        order = ["host", "srflx", "prflx", "relay"]
        kinds = sorted(self.types, key=lambda k: order.index(k) if k in order else len(order))
        counts = ", ".join(f"{self.types[k]} {k}" for k in kinds) or "none"
        return counts + (f"; {self.removed} removed since" if self.removed else "")

    def server_lines(self) -> list[str]:
        lines = []
        for stats in self.servers:
            first = (
                "-" if stats.first_candidate is None else f"{stats.first_candidate * 1000:.1f} ms"
            )
            lines.append(
                f"server {stats.url}: {stats.status}; first candidate {first}; "
                f"{_count(stats.candidates, 'candidate')}; {_count(len(stats.errors), 'error')}"
                + _error_list(stats.errors)
            )
        return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _error_list(errors: Sequence[tuple[int, str]], shown: int = 3) -> str:
    """The errors, each text once with how often it came (one per base, often), the
    first `shown` of them."""
    counts: dict[tuple[int, str], int] = {}
    for error in errors:
        counts[error] = counts.get(error, 0) + 1
    if not counts:
        return ""
    kinds = list(counts.items())
    parts = [
        f"{code} {text.rstrip('.')}" + (f" ×{times}" if times > 1 else "")
        for (code, text), times in kinds[:shown]
    ]
    rest = sum(times for _, times in kinds[shown:])
    if rest:
        parts.append(f"… {rest} more")
    return f" ({', '.join(parts)})"


def format_event(event: Event) -> str:
    """One plain line per event: what `ice-engine gather` prints without a terminal."""
    ms = f"{event.t * 1000:9.1f} ms"
    if isinstance(event, IceGatheringStateChangeEvent):
        return f"{ms}  state       {event.state.value}"
    if isinstance(event, IceCandidateErrorEvent):
        where = hostport(event.address, event.port) if event.address else "-"
        text = printable(event.errorText)
        return f"{ms}  ERROR {event.errorCode}  {event.url} from {where}: {text}"
    if isinstance(event, IceCandidateEvent):
        if event.candidate is None:
            return f"{ms}  complete    (null candidate)"
        if event.candidate.parsed is None:
            return f"{ms}  end-of-candidates  mid {event.candidate.sdpMid}"
        return f"{ms}  {_describe(event.candidate)}"
    if isinstance(event, CandidateRemovedEvent):
        return f"{ms}  REMOVED {_describe(event.candidate)}"
    return f"{ms}  {event.type}"


def _describe(c: IceCandidate) -> str:
    p = c.parsed
    assert p is not None
    related = f"  raddr {hostport(p.related_address, p.related_port)}" if p.related_address else ""
    protocol = f"{p.protocol} {p.tcptype}" if p.tcptype else p.protocol
    return (
        f"{p.type:<6} mid {c.sdpMid} comp {p.component} {protocol} "
        f"{hostport(p.address, p.port)}  prio {p.priority}  foundation {p.foundation}{related}"
    )


class PlainView:
    """Plain text, one line per event and a summary: for pipes, files and dumb terminals."""

    def __init__(self, out: TextIO, urls: Sequence[str]) -> None:
        self.out = out
        self.summary = Summary(urls)

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def restart(self, generation: int, ufrag: str) -> None:
        self.out.write(f"ICE restart: generation {generation}, ufrag {ufrag}\n")

    def add(self, event: Event) -> None:
        self.summary.add(event)
        self.out.write(format_event(event) + "\n")
        self.out.flush()

    def tick(self) -> None:
        return None

    def finish(
        self, elapsed: float, *, interrupted: bool = False, waiting: Sequence[str] = ()
    ) -> None:
        s = self.summary
        if interrupted:
            s.stop(waiting)
        for line in s.server_lines():
            self.out.write(line + "\n")
        self.out.write(
            f"{_count(s.candidates, 'candidate')} ({s.type_counts()}), "
            f"{_count(s.errors, 'error')}, {_count(s.generations, 'generation')}\n"
        )
        self.out.write(f"{_ended(interrupted)} {elapsed * 1000:.1f} ms\n")
        self.out.flush()


_COLUMNS = (
    "Time (ms)",
    "Mid",
    "Component",
    "Type",
    "Foundation",
    "Protocol",
    "Address",
    "Port",
    "Priority",
    "Related address",
)
_SHORT_HEADERS = {"Time (ms)": "ms", "Protocol": "Proto"}  # once any column gave way
_RIGHT_ALIGNED = frozenset({"Time (ms)", "Component", "Port", "Priority"})
# While the table is wider than the terminal, these give way in turn: the columns a reader
# needs least; then a mid or a protocol that every row shares (the title says it once);
# then the port, joined to its address; the related address last. An address is never
# cut or folded while something else can give way: a part of one reads as another.
_GIVE_WAY = ("Foundation", "Priority", "Component", "Mid", "Protocol", "Port", "Related address")
_SAID_ONCE = frozenset({"Mid", "Protocol"})  # give way only while every row has the same
_JOINED = "Address:port"  # the cell "Address" shows once "Port" gave way
_Row = tuple[dict[str, str], str, bool]  # cells by column, style, end of section
_ErrorRow = tuple[tuple[str, ...], str, bool]
_REDRAW_EVERY = 0.075  # seconds between redraws at least (the spinner turns every 80 ms)


class LiveView:
    """The terminal Trickle ICE page: a table filled as candidates arrive, errors in red,
    a spinner while waiting, and a per-server summary once gathering is complete."""

    def __init__(
        self,
        console: Console,
        urls: Sequence[str],
        *,
        deadline: float,
        watching: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.summary = Summary(urls)
        self.deadline = deadline
        self.watching = watching
        self.clock = clock
        self.generation_started = clock()
        self.next_draw = 0.0
        self.state = "new"
        # The widest cell of each column and what Mid and Protocol hold, over every row:
        # each frame chooses its columns from them and the terminal's width at the time.
        self.widths: dict[str, int] = {}
        self.values: dict[str, set[str]] = {name: set() for name in _SAID_ONCE}
        # Rows are kept, and the tables built when drawn: a frame draws only the last rows
        # (the screen shows no more), so its cost does not grow with the rows gathered.
        self.rows: list[_Row] = []
        self.error_rows: list[_ErrorRow] = []
        self.live: Live | None = None
        self.finished = False  # finish() has drawn the summary

    def __enter__(self) -> LiveView:
        self.resume()
        return self

    def suspend(self) -> None:
        """Before the process stops (Ctrl-Z): the frame left as drawn, the cursor shown."""
        if self.live is not None:
            self.live.stop()
            self.live = None

    def resume(self) -> None:
        """At the start, and once continued (`fg`): a frame drawn afresh below the cursor,
        where the shell has left it, and the cursor hidden."""
        from rich.live import Live

        self.live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
        self.live.start(refresh=True)

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            try:
                if not self.finished:  # ended by an error: the last frame may be old
                    self.state = "failed"  # not "complete", whatever an earlier one was
                    self.live.update(self._render(final=True), refresh=False)
            finally:  # the cursor shown again whatever happens
                self.live.__exit__(*exc)
                self.live = None

    @property
    def table(self) -> Table:
        """The candidate table, all of it."""
        return self._candidates(self.rows)

    def layout(self) -> tuple[tuple[str, ...], list[str]]:
        """The columns that fit the terminal now (see `_GIVE_WAY`), and what the title
        says once for every row."""
        from rich.markup import escape

        columns = list(_COLUMNS)
        said: list[str] = []
        for name in _GIVE_WAY:
            if self._width_of(columns) <= self.console.width:
                break
            if name in _SAID_ONCE:
                if len(self.values[name]) > 1:
                    continue
                said += [escape(f"mid {v}" if name == "Mid" else v) for v in self.values[name]]
            elif name == "Related address" and self.widths.get(name):
                said.append("no room for related addresses")
            columns.remove(name)
        return tuple(columns), said

    def _width_of(self, columns: Sequence[str]) -> int:
        """Terminal columns the candidate table takes with these columns."""
        short = len(columns) < len(_COLUMNS)
        widest = []
        for name in columns:
            key = _JOINED if name == "Address" and "Port" not in columns else name
            header = _SHORT_HEADERS.get(name, name) if short else name
            widest.append(max(len(header), self.widths.get(key, 0)))
        return _table_width(widest)

    def _candidates(self, rows: Sequence[_Row]) -> Table:
        from rich.table import Table

        columns, said = self.layout()
        hidden = len(self.rows) - len(rows)
        notes = [*said, f"the last {len(rows)}, {hidden} above"] if hidden else said
        table = Table(
            title="ICE candidates" + (f" ({', '.join(notes)})" if notes else ""),
            title_justify="left",
            expand=False,
            header_style="bold",
        )
        # Where the columns fit, only Address may narrow, its labels wrapping at their
        # spaces (each address has its room: `_measure_label`); where nothing more can
        # give way, the addresses fold rather than run off the screen.
        fits = self._width_of(columns) <= self.console.width
        for name in columns:
            wide = name in ("Address", "Related address")
            table.add_column(
                _SHORT_HEADERS.get(name, name) if len(columns) < len(_COLUMNS) else name,
                justify="right" if name in _RIGHT_ALIGNED else "left",
                no_wrap=not (name == "Address" or (wide and not fits)),
                overflow="fold" if wide else "ellipsis",
            )
        joined = "Port" not in columns
        for cells, style, end_section in rows:
            shown = [cells.get(name, "") for name in columns]
            if joined and _JOINED in cells:
                shown[columns.index("Address")] = cells[_JOINED]
            table.add_row(*shown, style=style, end_section=end_section)
        return table

    def _errors(self, rows: Sequence[_ErrorRow]) -> RenderableType:
        """The errors' table: a local address never folds (a part of one reads as another),
        URLs fold and texts wrap. Where that cannot fit, a line an error."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        hidden = len(self.error_rows) - len(rows)
        title = "Errors (icecandidateerror)" + (f" (the last {len(rows)})" if hidden else "")
        local = max(len("Local address"), *(len(cells[2]) for cells, _, _ in rows))
        # Time, URL and Text at their narrowest (a URL folds, a text wraps), the address whole
        if _table_width([len("Time (ms)"), 12, local, len("Code"), 12]) > self.console.width:
            lines = [
                f"{ms} ms  {code} {url} from {at}: {text}" for (ms, url, at, code, text), *_ in rows
            ]
            return Group(
                Text(title, style="bold red"),
                *(Text.from_markup(line, style="red", emoji=False) for line in lines),
            )
        table = Table(
            title=title, title_justify="left", title_style="bold red", header_style="bold red"
        )
        for name in ("Time (ms)", "URL", "Local address", "Code", "Text"):
            wraps = name in ("URL", "Text")
            table.add_column(
                name,
                style="red",
                no_wrap=not wraps,
                overflow="fold" if wraps else "ellipsis",
                justify="right" if name == "Time (ms)" else "left",
                min_width=12 if wraps else None,
            )
        for cells, style, end_section in rows:
            table.add_row(*cells, style=style, end_section=end_section)
        return table

    def restart(self, generation: int, ufrag: str) -> None:
        from rich.markup import escape

        if self.rows:
            self.rows[-1] = (*self.rows[-1][:2], True)  # a line under the last generation
        label = f"ICE restart: generation {generation}, ufrag {ufrag}"
        self._measure_label(label)
        bold = f"[bold]ICE restart[/]: generation {generation}, ufrag {escape(ufrag)}"
        self.rows.append(({"Address": bold}, "dim", False))
        self.generation_started = self.clock()
        self.tick()

    def add(self, event: Event) -> None:
        from rich.markup import escape

        self.summary.add(event)
        ms = f"{event.t * 1000:.1f}"
        if isinstance(event, IceGatheringStateChangeEvent):
            self.state = event.state.value
        elif isinstance(event, IceCandidateErrorEvent):
            where = hostport(event.address, event.port) if event.address else "-"
            # Server text and URLs as text, never as rich markup: "[/x]" must not crash us.
            cells = (event.url, where, str(event.errorCode), printable(event.errorText))
            self.error_rows.append(((ms, *(escape(cell) for cell in cells)), "", False))
        elif isinstance(event, IceCandidateEvent) and event.candidate is not None:
            c = event.candidate
            if c.parsed is None:
                self._keep({"Time (ms)": ms, "Mid": c.sdpMid}, "dim", "(end-of-candidates)")
            else:
                style = {"srflx": "cyan", "relay": "magenta", "prflx": "yellow"}
                self._add_row(ms, c, style.get(c.parsed.type, ""))
        elif isinstance(event, CandidateRemovedEvent):
            self._add_row(ms, event.candidate, "dim strike", removed=True)
        self.tick()

    def _add_row(self, ms: str, c: IceCandidate, style: str, removed: bool = False) -> None:
        p = c.parsed
        assert p is not None
        related = hostport(p.related_address, p.related_port) if p.related_address else ""
        text = {
            "Time (ms)": ms,
            "Mid": c.sdpMid,
            "Component": str(p.component),
            "Type": f"{p.type} removed" if removed else p.type,
            "Foundation": p.foundation,
            "Protocol": p.protocol + (f" ({p.tcptype})" if p.tcptype else ""),
            "Address": p.address,
            "Port": str(p.port),
            "Priority": str(p.priority),
            "Related address": related,
            _JOINED: hostport(p.address, p.port),
        }
        self._keep(text, style)

    def _measure_label(self, label: str) -> None:
        """A label in the Address column (end-of-candidates, a restart) wraps at its
        spaces: the column needs its longest word, so that no address beside it folds."""
        longest = max(map(len, label.split()))
        for key in ("Address", _JOINED):
            if longest > self.widths.get(key, 0):
                self.widths[key] = longest

    def _keep(self, text: dict[str, str], style: str, label: str = "") -> None:
        """A row: its cells measured and escaped (text, never markup), and a `label` in the
        Address column, which folds rather than widen the table."""
        from rich.markup import escape

        for name, cell in text.items():
            if len(cell) > self.widths.get(name, 0):
                self.widths[name] = len(cell)
            if name in self.values:
                self.values[name].add(cell)
        cells = {name: escape(cell) for name, cell in text.items()}
        if label:
            self._measure_label(label)
            cells["Address"] = label
        self.rows.append((cells, style, False))

    def tick(self) -> None:
        """Redraw, unless the last redraw was under `_REDRAW_EVERY` ago (or under 5 times its
        own cost ago): one redraw per event held the loop so long that servers timed out.
        What is left undrawn waits for the ticker's next call, or for `finish`."""
        now = self.clock()
        if self.live is None or now < self.next_draw:
            return
        self.live.update(self._render(), refresh=True)
        spent = self.clock() - now
        self.next_draw = now + max(_REDRAW_EVERY, 5 * spent)

    def _status(self) -> RenderableType:
        from rich.spinner import Spinner

        s = self.summary
        waited = self.clock() - self.generation_started
        if self.watching:
            text = f"watching… {waited:.0f} s, {_count(s.candidates, 'candidate')}, Ctrl-C to stop"
            if s.removed:
                text += f", {s.removed} removed"
        else:
            text = f"gathering… {waited * 1000:.0f} ms, {_count(s.candidates, 'candidate')}"
            if s.servers:
                text += (
                    f", heard from {s.heard_from()}/{len(s.servers)} servers "
                    f"(each has {self.deadline:g} s)"
                )
        if s.errors:
            text += f", [red]{_count(s.errors, 'error')}[/]"
        return Spinner("dots", text=text, style="green")

    def _render(self, final: bool = False) -> RenderableType:
        from rich.console import Group

        # While gathering, the last errors that leave room for some candidates and the
        # spinner: an error row takes up to 3 lines as its text wraps.
        shown = min(5, max(1, (self.console.height - 20) // 3))
        errors = self.error_rows if final else self.error_rows[-shown:]
        # what fits under the errors, above the spinner, borders and titles; all at the end
        fit = max(3, self.console.height - 12 - (3 * len(errors) + 5 if errors else 0))
        parts: list[RenderableType] = [self._candidates(self.rows if final else self.rows[-fit:])]
        if errors:
            parts.append(self._errors(errors))
        if final:
            parts.append(self._summary_table())
        else:
            parts.append(self._status())
        return Group(*parts)

    def _summary_table(self) -> RenderableType:
        from rich.console import Group
        from rich.markup import escape
        from rich.table import Table
        from rich.text import Text

        s = self.summary
        parts: list[RenderableType] = []
        if s.servers:
            rows = []
            for stats in s.servers:
                first = (
                    "-"
                    if stats.first_candidate is None
                    else f"{stats.first_candidate * 1000:.1f} ms"
                )
                kinds = ", ".join(f"{n} {k}" for k, n in stats.types.items())
                codes = ", ".join(sorted({str(code) for code, _ in stats.errors}))
                candidates = f"{stats.candidates}" + (f" ({kinds})" if kinds else "")
                errors = f"{len(stats.errors)}" + (f" ({codes})" if codes else "")
                rows.append((stats, (stats.url, stats.status, first, candidates, errors)))
            # Every cell whole (a URL folded mid-host reads as another host), else a line
            # a server, as plain text.
            widest = [
                max(len(name), *(len(cells[n]) for _, cells in rows))
                for n, (name, _) in enumerate(_SUMMARY_COLUMNS)
            ]
            if _table_width(widest) > self.console.width:
                parts.append(Text("Servers", style="bold"))
                for stats, line in zip(s.servers, s.server_lines(), strict=True):
                    parts.append(Text(line, style=_STATUS_STYLES.get(stats.status, "")))
            else:
                table = Table(title="Servers", title_justify="left", header_style="bold")
                for name, justify in _SUMMARY_COLUMNS:
                    url = name == "URL"
                    table.add_column(
                        name,
                        justify=justify,
                        no_wrap=not url,
                        overflow="fold" if url else "ellipsis",
                    )
                for stats, cells in rows:
                    table.add_row(
                        escape(cells[0]), *cells[1:], style=_STATUS_STYLES.get(stats.status)
                    )
                parts.append(table)
        parts.append(
            Text.from_markup(
                _HEADLINES.get(self.state, "[bold]stopped[/]")
                + f": {_count(s.candidates, 'candidate')} ({s.type_counts()}), "
                + (f"[red]{_count(s.errors, 'error')}[/]" if s.errors else "0 errors")
                + f", {_count(s.generations, 'generation')}"
            )
        )
        return Group(*parts)

    def finish(
        self, elapsed: float, *, interrupted: bool = False, waiting: Sequence[str] = ()
    ) -> None:
        from rich.console import Group
        from rich.text import Text

        if interrupted:
            self.summary.stop(waiting)
        self.finished = True
        if self.live is not None:
            self.live.update(
                Group(
                    self._render(final=True), Text(f"{_ended(interrupted)} {elapsed * 1000:.1f} ms")
                ),
                refresh=False,  # leaving the view draws it, once, in full
            )


def _table_width(widest: Sequence[int]) -> int:
    """Terminal columns a rich table takes whose columns are this wide: a space either
    side of each cell, and a border between and around them."""
    return 1 + sum(3 + width for width in widest)


def _ended(interrupted: bool) -> str:
    return "interrupted after" if interrupted else "done in"
