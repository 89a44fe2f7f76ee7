"""Mailboxes in parallel: extract reads and load writes run over a bounded pool per mailbox service.

- the pool runs as many jobs at once as its limit, never more, and gives the results in job order;
- an extract with many mailboxes in flight equals one a mailbox at a time (rows, notes, in the same order);
- a mailbox that cannot be read is noted on its own user while the others sync, in parallel as before;
- a throttled read (EWS ErrorServerBusy past the connector's patience) halves the service's limit, is read
  again after a pause, and the run succeeds;
- writes split by mailbox keep one outcome per delta, in the deltas' order; a fatal error still carries every
  outcome;
- the config keys are checked like every other.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

import polars as pl
import pytest

from connectors.errors import FatalError, RetriableError
from flows import pipeline
from flows.config import ConfigError, parse_config
from flows.parallel import Job, PoolReport, apply_in_parallel, run_pool, write_groups
from sandbox import Sandbox
from tests.flows.conftest import TODAY, World, at, user_block

USERS = [(f"user{i}@example.com", "ews" if i % 2 else "graph") for i in range(1, 7)]


@contextmanager
def six_users(tmp_path):
    """Six synced users, EWS and Graph mailboxes alternating, each with a Salesforce event and a mailbox meeting."""
    with Sandbox(tmp_path / "sandbox") as sb:
        ids = sb.seed({"org": {"shared_activities": True},
                       "users": [{"email": e, "name": e.split("@")[0].title(), "time_zone": "UTC", "mailbox_kind": k}
                                 for e, k in USERS]}, TODAY)
        world = World(sb, tmp_path, ids, kind="ews")
        world.configure(*[user_block(e, time_zone="UTC", mailbox_kind=k) for e, k in USERS])
        for n, (email, _kind) in enumerate(USERS, 1):
            sb.salesforce.org.add_event(ids[email], f"SF {n}", at(n, 9), at(n, 10))
            world.person(email).invite(f"Mail {n}", at(n, 13), at(n, 14), [USERS[n % len(USERS)][0]])
        yield world


def _with_limit(world, limit: int) -> None:
    text = world.config_path.read_text()
    for section in ("[exchange]\n", "[graph]\n"):
        head, _, rest = text.partition(section)
        rest = "\n".join(line for line in rest.split("\n") if not line.startswith("max_parallel_mailboxes"))
        text = f"{head}{section}max_parallel_mailboxes = {limit}\n{rest}"
    world.config_path.write_text(text)


def _extract(world):
    from flows.config import load_config

    cfg = load_config(world.config_path, env=world.env)
    conns = pipeline.connect(cfg)
    try:
        with world.store() as store:
            return pipeline.extract(cfg, conns, store, world.today, full_read=True)
    finally:
        conns.close()


# ------------------------------------------------------------------------------------------------- the pool


def test_the_pool_runs_its_limit_at_once_never_more_and_keeps_the_job_order():
    limit, n = 4, 12
    barrier = threading.Barrier(limit, timeout=10)  # breaks (and fails the test) unless `limit` run together
    lock, running, peak = threading.Lock(), [0], [0]

    def job(i: int):
        def run():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            if i < limit:
                barrier.wait()
            time.sleep(0.01 * ((n - i) % 3))  # finish out of order
            with lock:
                running[0] -= 1
            return i * i
        return run

    results = run_pool([Job("ews", job(i)) for i in range(n)], {"ews": limit})
    assert results == [i * i for i in range(n)]
    assert peak[0] == limit


def test_a_retriable_failure_halves_the_limit_and_is_tried_again_once():
    tries: dict[int, int] = {}

    def job(i: int):
        def run():
            tries[i] = tries.get(i, 0) + 1
            if i == 2 and tries[i] == 1:
                raise RetriableError("Exchange is busy")
            return i
        return run

    report = PoolReport()
    assert run_pool([Job("ews", job(i)) for i in range(5)], {"ews": 4}, retries=1, retry_pause_s=0.05,
                    report=report) == list(range(5))
    assert tries[2] == 2 and report.throttled() == {"ews": 1} and report.limits["ews"].lowest == 2

    def always(i: int):
        def run():
            if i == 1:
                raise RetriableError("Exchange stays busy")
            return i
        return run

    with pytest.raises(RetriableError, match="stays busy"):
        run_pool([Job("ews", always(i)) for i in range(4)], {"ews": 2}, retries=1, retry_pause_s=0.05)


def test_write_groups_split_by_mailbox_and_pack_graph_mailboxes():
    rows = [{"delta_id": f"d{i}", "mailbox": m, "target_id": None}
            for i, m in enumerate(["A@x.com", "b@x.com", "a@x.com", "g1@x.com", "g2@x.com", "nobody@x.com"])]
    groups = write_groups(pl.DataFrame(rows), {"a@x.com": "ews", "b@x.com": "ews", "g1@x.com": "graph",
                                                "g2@x.com": "graph"})
    assert [(k, g["delta_id"].to_list()) for k, g in groups] == [
        ("ews", ["d0", "d2"]), ("ews", ["d1"]), ("graph", ["d3", "d4"]), ("", ["d5"])]


# ------------------------------------------------------------------------------------------------- end to end


def test_a_parallel_extract_equals_one_mailbox_at_a_time(tmp_path):
    with six_users(tmp_path) as world:
        _with_limit(world, 1)
        one = _extract(world)
        _with_limit(world, 6)
        many = _extract(world)
    assert one.events.height >= 12
    assert many.events.equals(one.events)
    assert many.notes.equals(one.notes) and many.users.equals(one.users)


def test_an_unreadable_mailbox_is_its_own_users_trouble_in_parallel(tmp_path):
    with six_users(tmp_path) as world:
        blocks = [user_block(e, time_zone="UTC", mailbox_kind=k, **({"mailbox": "gone@example.com"} if n == 3 else {}))
                  for n, (e, k) in enumerate(USERS, 1)]
        world.configure(*blocks)
        summary = world.sync()
        notes = world.query("SELECT user_key, reason FROM notes WHERE run_id = ? AND kind = 'refused'",
                            [summary["run_id"]])
        assert notes == [(USERS[2][0], "mailbox_unreadable")]
        for n, (email, _kind) in enumerate(USERS, 1):
            if n != 3:
                assert [i for i in world.mail_items(email) if i["subject"] == f"SF {n}"], email


def test_a_throttled_read_halves_the_pool_and_is_read_again(tmp_path, caplog):
    with six_users(tmp_path) as world:
        # ErrorServerBusy asking for 5 s, past the connector's patience (max_retry_wait_s = 2): a RetriableError
        world.sb.faults.add("throttle", count=1, route="FindItem", backoff_ms=5000)
        with caplog.at_level(logging.WARNING, logger="calsync"):
            summary = world.sync()
        assert summary["status"] == "succeeded"
        assert any("Exchange is throttling" in r.getMessage() for r in caplog.records), caplog.text
        for n, (email, _kind) in enumerate(USERS, 1):
            assert [i for i in world.mail_items(email) if i["subject"] == f"SF {n}"], email


def test_parallel_writes_keep_one_outcome_per_delta_in_order_and_a_fatal_error_carries_them(tmp_path):
    from flows.config import load_config

    with six_users(tmp_path) as world:
        cfg = load_config(world.config_path, env=world.env)
        conns = pipeline.connect(cfg)
        try:
            base = {"op": "create", "target_side": "email", "target_id": None, "subject": "Written in parallel",
                    "is_all_day": False, "body": "", "invitees": []}
            deltas = pl.DataFrame([{**base, "delta_id": f"d{i}", "mailbox": USERS[i % 6][0],
                                    "start": at(10 + i, 9), "end": at(10 + i, 10)} for i in range(12)]
                                  + [{**base, "delta_id": "stray", "mailbox": "nobody@example.com",
                                      "start": at(9, 9), "end": at(9, 10)}])
            out = apply_in_parallel(conns.mail, deltas, internal=[e for e, _ in USERS], send_external=[],
                                    limits={"ews": 3, "graph": 3})
            assert out["delta_id"].to_list() == deltas["delta_id"].to_list()
            assert out.filter(pl.col("delta_id") != "stray")["status"].unique().to_list() == ["applied"]
            assert out.filter(pl.col("delta_id") == "stray")["status"].to_list() == ["failed"]
            for email, _kind in USERS:
                assert len([i for i in world.mail_items(email) if i["subject"] == "Written in parallel"]) == 2

            # Exchange refuses the service account from now on: its writes fail fatal, Graph's still go through
            org = world.sb.exchange.org
            org.passwords[world.sb.exchange.service_account[0].lower()] = "rotated"
            conns.close()  # fresh connections: an NTLM connection stays signed in
            conns = pipeline.connect(cfg)
            before = org.calls_by_operation.get("CreateItem", 0)
            again = deltas.with_columns(pl.col("delta_id") + "-2", pl.lit("Second round").alias("subject"))
            with pytest.raises(FatalError) as info:
                apply_in_parallel(conns.mail, again, internal=[e for e, _ in USERS], send_external=[],
                                  limits={"ews": 3, "graph": 3})
            got = info.value.outcomes
            assert got["delta_id"].to_list() == again["delta_id"].to_list()
            kinds = dict(USERS)
            status = {(kinds.get(m), s) for m, s in zip(again["mailbox"], got["status"])}
            assert ("graph", "applied") in status and ("ews", "failed") in status and ("ews", "applied") not in status
            assert org.calls_by_operation.get("CreateItem", 0) - before <= 3  # the groups after the first: no call
        finally:
            conns.close()


# ------------------------------------------------------------------------------------------------- config


def _cfg(**sections):
    raw = {"salesforce": {"auth": "session", "instance_url": "https://x.my.salesforce.com",
                          "session_id_env": "SID"},
           "exchange": {"endpoint": "https://mail.x.com/EWS/Exchange.asmx", "username": "svc@x.com",
                        "password_env": "PW"},
           "users": [{"email": "a@x.com"}]}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_config(raw, env={"SID": "s", "PW": "p"})


def test_config_keys_of_parallelism_and_scale_out():
    cfg = _cfg()
    assert cfg.parallel_limits() == {"ews": 16} and cfg.scale.task_runner == "thread"
    cfg = _cfg(exchange={"max_parallel_mailboxes": 4},
               scale={"task_runner": "dask", "dask_address": "tcp://sched:8786", "shard_size": 50})
    assert cfg.parallel_limits() == {"ews": 4}
    assert (cfg.scale.task_runner, cfg.scale.dask_address, cfg.scale.shard_size) == ("dask", "tcp://sched:8786", 50)
    bad = [
        ({"exchange": {"max_parallel_mailboxes": 0}}, "[exchange] max_parallel_mailboxes: expected a whole number from 1 to 64"),
        ({"exchange": {"max_parallel_mailbox": 4}}, "did you mean max_parallel_mailboxes?"),
        ({"scale": {"task_runner": "ray"}}, "[scale] task_runner: expected one of thread, dask, got 'ray'"),
        ({"scale": {"dask_address": "tcp://s:8786"}}, "only used with task_runner = \"dask\""),
        ({"scale": {"task_runner": "dask", "dask_address": "sched"}}, "expected the Dask scheduler's address"),
        ({"scale": {"shards": 3}}, "[scale] shards: unknown key"),
        ({"scale": {"task_runner": "dask", "max_parallel_shards": 1.5}}, "[scale] max_parallel_shards: expected a whole"),
    ]
    for sections, message in bad:
        with pytest.raises(ConfigError) as info:
            _cfg(**sections)
        assert message in str(info.value), (sections, str(info.value))
