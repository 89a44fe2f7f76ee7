"""Mailboxes in parallel: a bounded pool of threads per mailbox service, which backs off when the service does.

``run_pool`` runs one job per mailbox (or per group of mailboxes) over ``concurrent.futures`` threads, at most
``limit`` at once per service (``[exchange]`` / ``[graph]`` ``max_parallel_mailboxes``), and hands the results
back in the order of the jobs, whatever order they finished in, so a run's frames, notes and outcomes are the
same as one mailbox at a time.

Throttling (docs/scale.md, "Mailboxes in parallel"). The connectors honour the services' own back-off first:
exchangelib waits out EWS's ``BackOffMilliseconds`` on a policy every thread of the connector shares (one
throttled request holds them all back), and the Graph connector waits ``Retry-After`` per request, with one
request in flight per mailbox (Graph's limit is per mailbox). A job that still fails with ``RetriableError``
(the connector's patience, ``max_retry_wait_s``, ran out) or, for writes, comes back with retriable failures
is the pool's throttle signal: that service's limit halves (down to 1) and grows back by one after as many
clean jobs as the limit, so a struggling server sees fewer requests instead of the whole pool retrying at
once. A read that failed retriably is tried again once, after a pause, at the lower limit; failing again, the
pool stops starting jobs, lets the running ones finish, and raises it (the stage's own retry then waits).

The dispatcher is the calling thread: it alone submits, counts and reports progress, so ``progress`` (a
rich bar, Prefect's run logger) is never called from a worker thread. Each job runs in a copy of the
caller's context (a Prefect run's context reaches the connectors' logging as it does sequentially).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import polars as pl

from connectors.errors import FatalError, RetriableError
from connectors.mailbox import SERVICES
from transforms.schema import OUTCOME_SCHEMA, conform, empty

log = logging.getLogger("calsync")
DEFAULT_LIMIT = 16  # mailboxes in flight per service (see docs/config.md: within EWS's and Graph's limits)
RETRY_PAUSE_S = 2.0  # before a read that failed retriably is tried again (the stage's first retry waits as long)


@dataclass
class Limiter:
    """The jobs one service may have in flight: ``limit`` of at most ``ceiling``; halves on a throttle signal
    and grows back by one after ``limit`` clean jobs in a row (additive increase, multiplicative decrease).
    Used by the dispatcher thread only (no lock)."""

    ceiling: int
    limit: int = 0
    running: int = 0
    clean: int = 0
    throttled: int = 0  # signals seen (reported in the log, tested)
    lowest: int = 0

    def __post_init__(self) -> None:
        self.ceiling = max(1, int(self.ceiling))
        self.limit = self.limit or self.ceiling
        self.lowest = self.limit

    @property
    def free(self) -> bool:
        return self.running < self.limit

    def done(self, throttled: bool) -> None:
        self.running -= 1
        if throttled:
            self.throttled += 1
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self.clean = 0
            return
        self.clean += 1
        if self.limit < self.ceiling and self.clean >= self.limit:
            self.limit += 1
            self.clean = 0


@dataclass
class Job:
    """One unit of the pool: ``fn()`` for the service ``kind``."""

    kind: str
    fn: Callable[[], Any]
    tries: int = 0
    not_before: float = 0.0


@dataclass
class PoolReport:
    """What the pool saw: per service the lowest limit it went down to and the throttle signals."""

    limits: dict[str, Limiter] = field(default_factory=dict)

    def throttled(self) -> dict[str, int]:
        return {k: v.throttled for k, v in self.limits.items() if v.throttled}


def run_pool(jobs: Sequence[Job], limits: dict[str, int], *, retries: int = 0,
             throttled: Callable[[Any], bool] = lambda _result: False,
             on_result: Callable[[int, Any], None] | None = None, tick: Callable[[], None] | None = None,
             retry_pause_s: float = RETRY_PAUSE_S, report: PoolReport | None = None) -> list[Any]:
    """Run ``jobs`` (at most ``limits[kind]`` at once per kind; a kind not in ``limits`` gets DEFAULT_LIMIT) and
    return their results in job order. ``throttled(result)`` says whether a result is a throttle signal (writes:
    retriable failures); a ``RetriableError`` always is, and is retried ``retries`` times (reads only: a write
    is never repeated). ``on_result(index, result)`` and ``tick()`` (about twice a second) run in the calling
    thread. Any other exception stops the pool (running jobs finish) and is raised."""
    limiters = {k: Limiter(limits.get(k, DEFAULT_LIMIT)) for k in dict.fromkeys(j.kind for j in jobs)}
    if report is not None:
        report.limits.update(limiters)
    queues: dict[str, deque[int]] = {k: deque() for k in limiters}
    for i, job in enumerate(jobs):
        queues[job.kind].append(i)
    results: list[Any] = [None] * len(jobs)
    if not jobs:
        return results
    error: BaseException | None = None
    running: dict[Future, int] = {}
    with ThreadPoolExecutor(max_workers=sum(v.ceiling for v in limiters.values()),
                            thread_name_prefix="calsync-mailbox") as pool:
        while running or (error is None and any(queues.values())):
            now = time.monotonic()
            wake = None
            for kind, queue in queues.items():
                lim = limiters[kind]
                while error is None and queue and lim.free:
                    if jobs[queue[0]].not_before > now:  # a retry waiting out its pause
                        wake = min(wake or jobs[queue[0]].not_before, jobs[queue[0]].not_before)
                        break
                    i = queue.popleft()
                    running[pool.submit(contextvars.copy_context().run, jobs[i].fn)] = i
                    lim.running += 1
            if not running:
                time.sleep(max(0.0, (wake or now) - now))
                continue
            timeout = 0.5 if wake is None else min(0.5, max(0.0, wake - time.monotonic()))
            finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in finished:
                i = running.pop(future)
                job, lim = jobs[i], limiters[jobs[i].kind]
                try:
                    result = future.result()
                except RetriableError as exc:
                    lim.done(throttled=True)
                    _throttled(job.kind, lim)
                    if job.tries < retries and error is None:
                        job.tries += 1
                        job.not_before = time.monotonic() + retry_pause_s * job.tries
                        queues[job.kind].append(i)
                    else:
                        error = error or exc
                    continue
                except BaseException as exc:  # stop starting jobs; the running ones finish
                    lim.done(throttled=False)
                    error = error or exc
                    continue
                signal = bool(throttled(result))
                lim.done(throttled=signal)
                if signal:
                    _throttled(job.kind, lim)
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
            if tick is not None:
                tick()
    if error is not None:
        raise error
    return results


def _throttled(kind: str, lim: Limiter) -> None:
    # one warning per pool (a stage's attempt); every further halving at DEBUG: an operator needs the fact once
    (log.warning if lim.throttled == 1 else log.debug)("%s is throttling or unavailable: %d mailbox(es) at once from now on (of %d), growing back as"
                " calls succeed", _service(kind), lim.limit, lim.ceiling)


# --------------------------------------------------------------------------- writes

GRAPH_PACK = 20  # deltas a Graph group gathers before it is closed: a $batch holds 20 requests and may mix mailboxes
STOP_AFTER = 3  # groups in a row whose every write failed retriably: the service is down, the rest is not tried


def write_groups(deltas: pl.DataFrame, kinds: dict[str, str]) -> list[tuple[str, pl.DataFrame]]:
    """``deltas`` split by mailbox into (kind, deltas) groups, mailboxes in the order they first appear. An EWS
    group is one mailbox (the connector writes a mailbox's batches on its Account); Graph mailboxes are packed
    into groups of at least GRAPH_PACK deltas, so its $batches stay full. Deltas of no known mailbox form one
    group of kind "" (the router fails them without a call)."""
    key = pl.col("mailbox").fill_null("").str.to_lowercase()
    tagged = deltas.with_columns(key.alias("_mb"), key.replace_strict(kinds, default="", return_dtype=pl.String)
                                 .alias("_kind"))
    groups: list[tuple[str, list[str]]] = []
    graph_open: list[str] | None = None
    count: dict[str, int] = dict(tagged.group_by("_mb").len().rows())
    graph_size = 0
    for mailbox, kind in tagged.select("_mb", "_kind").unique(maintain_order=True).rows():
        if kind == "graph":
            if graph_open is None or graph_size >= GRAPH_PACK:
                graph_open, graph_size = [], 0
                groups.append(("graph", graph_open))
            graph_open.append(mailbox)
            graph_size += count[mailbox]
        elif kind == "":
            unrouted = next((g for g in groups if g[0] == ""), None)
            if unrouted is None:
                groups.append(("", [mailbox]))
            else:
                unrouted[1].append(mailbox)
        else:
            groups.append((kind, [mailbox]))
    return [(kind, tagged.filter(pl.col("_mb").is_in(members)).drop("_mb", "_kind")) for kind, members in groups]


def apply_in_parallel(mail: Any, deltas: pl.DataFrame, *, internal: list[str], send_external: list[str],
                      limits: dict[str, int], progress: Callable[[int, int], None] | None = None,
                      directory_emails: Any = None) -> pl.DataFrame:
    """``mail.apply`` (a ``connectors.mailbox.Mailboxes``) over ``write_groups`` in the pool; one outcome per
    delta, in the order of ``deltas``. Writes are never repeated: a group with retriable failures is a throttle
    signal only (its deltas stay failed, retriable, for a replay). A FatalError of a service (credentials
    revoked) fails that service's groups not yet started without a call, and is raised at the end carrying
    every outcome (``.outcomes``), as the router does; STOP_AFTER groups in a row whose every write failed
    retriably stop that service's remaining groups the same way (failed retriable, nothing sent)."""
    if deltas.height == 0:
        return empty(OUTCOME_SCHEMA)
    groups = write_groups(deltas, getattr(mail, "kinds", {}))
    lock = threading.Lock()
    fatal: dict[str, FatalError] = {}
    down: dict[str, int] = {}  # kind -> groups in a row with every write failed retriably
    done = [0] * len(groups)

    def failed(part: pl.DataFrame, reason: str, retriable: bool) -> pl.DataFrame:
        return conform(part.select("delta_id", "target_id").with_columns(
            pl.lit("failed").alias("status"), pl.lit(reason).alias("error"), pl.lit(retriable).alias("retriable"),
            pl.col("target_id").alias("new_id")), OUTCOME_SCHEMA)

    def job(i: int, kind: str, part: pl.DataFrame) -> Callable[[], pl.DataFrame]:
        def write() -> pl.DataFrame:
            with lock:
                stop, gone = fatal.get(kind), down.get(kind, 0) >= STOP_AFTER
            if stop is not None:
                return failed(part, f"fatal: {stop}", False)
            if gone:
                return failed(part, f"retriable: {_service(kind)} stayed unavailable for {STOP_AFTER} mailboxes in a"
                                    " row, so this one was not written; retry or replay the run", True)

            def cb(n: int, _total: int) -> None:
                with lock:
                    done[i] = n
            try:
                return conform(mail.apply(part, internal=internal, send_external=send_external,
                                          directory_emails=directory_emails, progress=cb), OUTCOME_SCHEMA)
            except FatalError as exc:
                with lock:
                    fatal.setdefault(kind, exc)
                partial = getattr(exc, "outcomes", None)
                return conform(partial, OUTCOME_SCHEMA) if partial is not None else failed(part, f"fatal: {exc}", False)
        return write

    def finished(i: int, outcomes: pl.DataFrame) -> None:
        kind = groups[i][0]
        with lock:
            done[i] = groups[i][1].height
            all_retriable = outcomes.height > 0 and bool(outcomes["retriable"].fill_null(False).all())
            down[kind] = down.get(kind, 0) + 1 if all_retriable else 0

    def tick() -> None:
        if progress:
            with lock:
                n = sum(done)
            progress(n, deltas.height)

    jobs = [Job(kind or "ews", job(i, kind, part)) for i, (kind, part) in enumerate(groups)]
    tick()
    parts = run_pool(jobs, limits, throttled=lambda o: bool(o["retriable"].fill_null(False).any()),
                     on_result=finished, tick=tick)
    tick()
    return in_delta_order(deltas, parts, fatal)


def in_delta_order(deltas: pl.DataFrame, parts: list[pl.DataFrame], fatal: dict) -> pl.DataFrame:
    """The outcomes of every part, one per delta in the deltas' order; with a fatal error of a service, that
    error is raised carrying them all (the load records what was written before it)."""
    order = deltas.select("delta_id").with_row_index("_order")
    outcomes = order.join(pl.concat(parts), on="delta_id", how="left").sort("_order").drop("_order")
    if fatal:
        exc = next(iter(fatal.values()))
        exc.outcomes = outcomes  # type: ignore[attr-defined]
        raise exc
    return outcomes


def _service(kind: str) -> str:
    return SERVICES.get(kind, kind or "the mailbox service")
