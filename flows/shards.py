"""Scale-out: shards of mailboxes read and written as tasks on a Dask cluster ([scale] task_runner = "dask").

What is sharded: the mailbox reads of ``extract`` and the email writes of ``load``. What stays single: the
Salesforce reads and writes (one SOQL query for every user, writes packed 200 to a call), the planner and the
store (DuckDB has one writer). A shard task gets the config file's path, its users (with the paired ids to
confirm and the rows of their last trusted read) or its deltas, builds its own connections from the config
(secrets resolved on the worker, from its environment or Prefect Secret blocks, as every calsync process does:
they never travel with the task), and returns frames, notes, problems and its call counts. The flow puts the
shards' results together in the users' (or the deltas') order, so the run is the one the thread runner makes.

Inside a Prefect flow run the shards are Prefect tasks submitted through prefect-dask's ``DaskTaskRunner`` (they
show in the run's UI, on the cluster's workers); outside one (``--no-prefect``) they are plain Dask tasks on the
same cluster. ``max_parallel_shards`` shards run at once, and each reads or writes ``max_parallel_mailboxes //
max_parallel_shards`` mailboxes at once (at least 1), so the services' limits hold for the cluster as a whole.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

import polars as pl

from connectors.errors import FatalError
from flows.parallel import in_delta_order
from transforms.schema import OUTCOME_SCHEMA, conform, empty


@dataclass
class ReadShard:
    """One shard's reads: its users (user_key, mailbox) in order, their paired ids to confirm, and the rows of
    the trusted last reads (``known``, for the mailboxes in ``trusted``)."""

    users: pl.DataFrame
    pairs: pl.DataFrame
    w_start: datetime
    w_end: datetime
    known: pl.DataFrame | None
    trusted: set[str]
    limits: dict[str, int]


@dataclass
class ShardResult:
    """What a shard task hands back: per user a read (or the FatalError that kept it from being read), or the
    outcomes of its writes (with the fatal error of a service, if one came); its calls per mailbox kind."""

    reads: list = field(default_factory=list)
    outcomes: pl.DataFrame | None = None
    fatal: FatalError | None = None
    calls: dict[str, int] = field(default_factory=dict)


def _mailboxes(cfg, users: Sequence[str] | None = None, kinds: set[str] | None = None):
    """The worker's own connections (to the kinds ``users``' mailboxes need, or ``kinds``), from the config it
    read itself: the secrets are resolved here, on the worker."""
    from connectors.mailbox import Mailboxes
    from flows.pipeline import mailbox_connectors

    if kinds is None:
        wanted = set(users or ())
        kinds = {u.mailbox_kind for u in cfg.enabled_users if u.mailbox in wanted}
    connectors = mailbox_connectors(cfg, kinds)
    return Mailboxes(connectors, {u.mailbox: u.mailbox_kind for u in cfg.enabled_users if u.mailbox_kind in kinds})


def read_shard(config_path: str, shard: ReadShard) -> ShardResult:
    """A shard task: read its users' mailboxes (``flows.pipeline.read_mailboxes``) over the worker's own
    connections. A RetriableError still unresolved after the pool's retry fails the task (and the run's extract,
    as it does on the thread runner)."""
    from flows.config import load_config
    from flows.pipeline import read_mailboxes

    mail = _mailboxes(load_config(config_path), users=shard.users["mailbox"].to_list())
    try:
        reads = read_mailboxes(mail, shard.users, shard.pairs, shard.w_start, shard.w_end, None, shard.known,
                               shard.trusted, shard.limits)
        return ShardResult(reads=reads, calls=mail.api_calls_by_kind())
    finally:
        mail.close()


def write_shard(config_path: str, kind: str, deltas: pl.DataFrame, internal: list[str], send_external: list[str],
                limits: dict[str, int]) -> ShardResult:
    """A shard task: write its email deltas (all of one mailbox kind) through ``flows.parallel.apply_in_parallel``
    over the worker's own connections; a service's fatal error comes back with the outcomes, not raised."""
    from flows.config import load_config
    from flows.parallel import apply_in_parallel

    mail = _mailboxes(load_config(config_path), kinds={kind})
    try:
        try:
            outcomes = apply_in_parallel(mail, deltas, internal=internal, send_external=send_external, limits=limits)
            return ShardResult(outcomes=outcomes, calls=mail.api_calls_by_kind())
        except FatalError as exc:
            outcomes = getattr(exc, "outcomes", None)
            exc.outcomes = None  # type: ignore[attr-defined]  # travels once, in the result
            return ShardResult(outcomes=outcomes, fatal=exc, calls=mail.api_calls_by_kind())
    finally:
        mail.close()


def shard_limits(limits: dict[str, int], shards_at_once: int) -> dict[str, int]:
    """Each shard's share of the services' limits: together the shards in flight keep within them."""
    return {k: max(1, v // shards_at_once) for k, v in limits.items()}


def chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class DaskShards:
    """Runs shard functions on a Dask cluster, ``max_parallel_shards`` at a time, results in submission order.

    Use as a context manager around a run's shards: it connects to ``dask_address`` (or starts a local
    cluster, torn down at the end). In a Prefect flow run a shard is a Prefect task (prefect-dask's
    ``DaskTaskRunner``), otherwise a plain Dask task."""

    def __init__(self, config_path: str, address: str = "", shards_at_once: int = 4, shard_size: int = 200) -> None:
        self.config_path = config_path
        self.address = address
        self.shards_at_once = shards_at_once
        self.shard_size = shard_size
        self._runner: Any = None
        self._client: Any = None
        self._cluster: Any = None
        self.calls: dict[str, int] = {}  # the shard tasks' mailbox calls so far, per kind

    @classmethod
    def for_config(cls, cfg) -> "DaskShards | None":
        """The cluster runner a config asks for ([scale] task_runner = "dask"), or None (the thread runner)."""
        if cfg.scale.task_runner != "dask":
            return None
        if cfg.source is None:
            raise FatalError("[scale] task_runner = \"dask\" needs the config read from a file (load_config): the"
                             " shard tasks read it on the workers")
        return cls(str(cfg.source.resolve()), cfg.scale.dask_address, cfg.scale.max_parallel_shards,
                   cfg.scale.shard_size)

    def __enter__(self) -> "DaskShards":
        from prefect.context import FlowRunContext

        try:
            if FlowRunContext.get() is not None:
                from prefect_dask import DaskTaskRunner

                self._runner = (DaskTaskRunner(address=self.address) if self.address
                                else DaskTaskRunner(cluster_kwargs={"processes": True}))
                self._runner.__enter__()
            else:
                from distributed import Client, LocalCluster

                if not self.address:
                    self._cluster = LocalCluster(processes=True)
                self._client = Client(self.address or self._cluster, set_as_default=False)
        except OSError as exc:
            self.__exit__()
            raise FatalError(f"cannot reach the Dask scheduler at {self.address} ({type(exc).__name__}: {exc}):"
                             " start it (`dask scheduler`) or fix [scale] dask_address") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self._runner.__exit__(None, None, None)
            self._runner = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def _submit(self, fn: Callable, name: str, args: tuple) -> tuple[Any, Any]:
        """(the future to wait on, a function giving its result)."""
        if self._runner is not None:
            import inspect

            from prefect import task
            from prefect.cache_policies import NO_CACHE
            from prefect.context import TaskRunContext

            params = dict(zip(inspect.signature(fn).parameters, args))
            shard_task = task(fn, name=name, cache_policy=NO_CACHE, persist_result=False)

            def submit():
                # Submitted from inside the extract (or load) task, whose run context holds its parameters: the
                # live connections and the store, which neither can nor may travel. The shard runs as a task of
                # the flow run instead (the flow's context, settings and tags still go with it).
                TaskRunContext.__var__.set(None)
                return self._runner.submit(shard_task, params)

            future = contextvars.copy_context().run(submit)
            return future.wrapped_future, future.result
        future = self._client.submit(fn, *args, pure=False)
        return future, future.result

    def run(self, fn: Callable, name: str, calls: Sequence[tuple], on_result: Callable[[int, Any], None] | None = None,
            local: Callable[[int], Any] | None = None) -> list:
        """``fn(*args)`` for each args of ``calls`` on the cluster, at most ``shards_at_once`` at a time; results in
        order. ``local(i)``, asked just before a shard would go out, may give its result instead (not None).
        A shard that raised: the others in flight finish, the rest are not started, the error is raised."""
        from distributed import wait

        results: list = [None] * len(calls)
        running: dict[Any, tuple[int, Callable]] = {}
        todo = list(range(len(calls)))[::-1]
        error: BaseException | None = None
        while running or (todo and error is None):
            while todo and error is None and len(running) < self.shards_at_once:
                i = todo.pop()
                here = local(i) if local is not None else None
                if here is not None:
                    results[i] = here
                    if on_result is not None:
                        on_result(i, here)
                    continue
                future, result = self._submit(fn, f"{name} {i + 1}/{len(calls)}", calls[i])
                running[future] = (i, result)
            if not running:
                continue
            with next(iter(running)).client.as_current():  # wait() asks for the current client
                finished = wait(list(running), return_when="FIRST_COMPLETED").done
            for future in finished:
                i, result = running.pop(future)
                try:
                    results[i] = result()
                except BaseException as exc:
                    error = error or exc
                    continue
                if on_result is not None:
                    on_result(i, results[i])
        if error is not None:
            raise error
        return results

    # ---------------------------------------------------------------- the two sharded stages

    def read(self, users: pl.DataFrame, pairs: pl.DataFrame, w_start: datetime, w_end: datetime,
             known: pl.DataFrame | None, trusted: set[str], limits: dict[str, int],
             progress: Callable[[str, int, int], None] | None = None) -> list:
        """``flows.pipeline.read_mailboxes``'s per-user results, the users read in shards on the cluster."""
        per_shard = shard_limits(limits, self.shards_at_once)
        calls = []
        for part in chunks(users.height, self.shard_size):
            members = users[part.start:part.stop].select("user_key", "mailbox")
            mine = pairs.join(members, on=["user_key", "mailbox"], how="semi") if pairs.height else pairs
            rows = (known.join(members, on=["user_key", "mailbox"], how="semi")
                    if known is not None and known.height else known)
            calls.append((self.config_path, ReadShard(members, mine, w_start, w_end, rows,
                                                      trusted & set(members["mailbox"].to_list()), per_shard)))
        done = [0]

        def got(i: int, result: ShardResult) -> None:
            done[0] += len(result.reads)
            self._count(result.calls)
            if progress:
                progress("read mailboxes", done[0], users.height)

        if progress:
            progress("read mailboxes", 0, users.height)
        results = self.run(read_shard, "read mailboxes", calls, got)
        return [r for result in results for r in result.reads]

    def write(self, mail: Any, deltas: pl.DataFrame, internal: list[str], send_external: list[str],
              limits: dict[str, int], progress: Callable[[int, int], None] | None = None) -> pl.DataFrame:
        """Email deltas written in shards of ``shard_size`` mailboxes of one kind each; one outcome per delta in
        the order of ``deltas``. Deltas of no configured mailbox are failed here by the router ``mail`` (no call).
        A service's fatal error fails its shards not yet started without a call, and is raised at the end with
        every outcome (``.outcomes``), as the thread runner does."""
        if deltas.height == 0:
            return empty(OUTCOME_SCHEMA)
        mb = pl.col("mailbox").fill_null("").str.to_lowercase()
        tagged = deltas.with_columns(mb.alias("_mb"), mb.replace_strict(mail.kinds, default="",
                                                                        return_dtype=pl.String).alias("_kind"))
        outcomes: list[pl.DataFrame] = []
        parts: list[tuple[str, pl.DataFrame]] = []
        for (kind,), group in tagged.partition_by("_kind", as_dict=True, maintain_order=True).items():
            group = group.drop("_kind")
            if not kind:
                outcomes.append(conform(mail.apply(group.drop("_mb"), internal=internal), OUTCOME_SCHEMA))
                continue
            mailboxes = group["_mb"].unique(maintain_order=True).to_list()
            for part in chunks(len(mailboxes), self.shard_size):
                parts.append((kind, group.filter(pl.col("_mb").is_in(mailboxes[part.start:part.stop])).drop("_mb")))
        per_shard = shard_limits(limits, self.shards_at_once)
        fatal: dict[str, FatalError] = {}
        done = [sum(o.height for o in outcomes)]

        def local(i: int) -> ShardResult | None:
            kind, part = parts[i]
            if kind not in fatal:
                return None
            failed = part.select("delta_id", "target_id").with_columns(
                pl.lit("failed").alias("status"), pl.lit(f"fatal: {fatal[kind]}").alias("error"),
                pl.col("target_id").alias("new_id"))
            return ShardResult(outcomes=conform(failed, OUTCOME_SCHEMA))

        def got(i: int, result: ShardResult) -> None:
            done[0] += result.outcomes.height if result.outcomes is not None else 0
            self._count(result.calls)
            if result.fatal is not None:
                fatal.setdefault(parts[i][0], result.fatal)
            if progress:
                progress(done[0], deltas.height)

        results = self.run(write_shard, "write mail",
                           [(self.config_path, kind, p, internal, send_external, per_shard) for kind, p in parts],
                           got, local)
        outcomes.extend(conform(r.outcomes, OUTCOME_SCHEMA) for r in results if r.outcomes is not None)
        return in_delta_order(deltas, outcomes, fatal)

    def _count(self, calls: dict[str, int]) -> None:
        for kind, n in calls.items():
            self.calls[kind] = self.calls.get(kind, 0) + n
