"""Scale-out on Dask: the sync with its mailbox shards on a local Dask cluster of two worker processes gives the
same run as the thread runner (same deltas, outcomes, notes, and the same mailbox and Salesforce state after),
for a first run and an incremental one, and over the Prefect flow (prefect-dask's DaskTaskRunner) as well.

Two worlds are seeded alike; one syncs on the thread runner, the other on the cluster. The workers are separate
processes: they read the config file themselves and take the secrets from their environment (set before the
cluster starts, as an operator's workers get them), never from the flow.
"""

from __future__ import annotations

from contextlib import contextmanager

import dask
import pytest

from connectors.errors import FatalError
from flows.config import load_config
from flows.sync import run_sync
from tests.flows.conftest import ALICE_, BOB_, at, mail_with, make_world

SCALE = '\n[scale]\ntask_runner = "dask"\ndask_address = "{address}"\nshard_size = 1\nmax_parallel_shards = 2\n'


def _seed(world) -> None:
    """The same calendars in each world: events on both sides, a meeting with an invitee, one edit to come."""
    sf = world.sb.salesforce.org
    sf.add_event(world.ids[ALICE_], "SF planning", at(1, 9), at(1, 10))
    sf.add_event(world.ids[BOB_], "SF review", at(2, 14), at(2, 15))
    for mailbox, subject, day in ((ALICE_, "Mail standup", 3), (BOB_, "Mail customer call", 4)):
        world.person(mailbox).invite(subject, at(day, 8), at(day, 9), ["carol@customer.example"])


def _edit(world) -> None:
    """A change on each side between the runs: a mailbox item moved, a Salesforce event renamed."""
    item = mail_with(world, BOB_, "Mail customer call")[0]
    world.person(BOB_).edit(item["id"], start=at(4, 11), end=at(4, 12))
    event = next(e for e in world.sf_events(ALICE_) if e["Subject"] == "SF planning")
    world.salesforce().Event.update(event["Id"], {"Subject": "SF planning (moved)"})


def _run(world) -> dict:
    """One sync (plain stage calls); what it planned and did, without the ids each sandbox makes its own."""
    summary = run_sync(load_config(world.config_path, env=world.env), world.today)
    with world.store() as store:
        deltas = store.deltas(summary["run_id"])
        outcomes = store.outcomes(summary["run_id"])
        notes = store.notes(summary["run_id"])
    joined = deltas.join(outcomes, on="delta_id", how="left")
    return {
        "status": summary["status"],
        "totals": summary["totals"],
        "deltas": sorted((r["user_key"], str(r["op"]), str(r["target_side"]), r["subject"], r["start"], r["status"],
                          r["error"]) for r in joined.iter_rows(named=True)),
        "notes": sorted((r["user_key"], r["kind"], r["reason"]) for r in notes.iter_rows(named=True)),
    }


def _state(world) -> dict:
    """Both sides after the run: each user's mailbox items and Salesforce events (subject, start, end)."""
    out = {}
    for user in (ALICE_, BOB_):
        out[user] = (sorted((i["subject"], i["start"], i["end"]) for i in world.mail_items(user)),
                     sorted((e["Subject"], e["StartDateTime"], e["EndDateTime"]) for e in world.sf_events(user)
                            if not e.get("IsDeleted")))
    return out


@contextmanager
def _cluster(world, monkeypatch):
    """A local cluster of two worker processes whose environment holds the world's secrets."""
    from distributed import LocalCluster

    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        yield cluster


def _scenario(world, address: str | None):
    if address:
        world.config_path.write_text(world.config_path.read_text() + SCALE.format(address=address))
    _seed(world)
    first = _run(world)
    _edit(world)
    second = _run(world)
    return first, second, _state(world)


def test_sync_on_a_dask_cluster_equals_the_thread_runner(tmp_path, monkeypatch):
    with make_world(tmp_path / "threads", {ALICE_: "ews", BOB_: "graph"}) as threads:
        threads.configure()
        expected = _scenario(threads, None)
    with make_world(tmp_path / "dask", {ALICE_: "ews", BOB_: "graph"}) as world:
        world.configure()  # the secrets go into world.env, then into the workers' environment
        with _cluster(world, monkeypatch) as cluster:
            got = _scenario(world, cluster.scheduler_address)
        with world.store() as store:
            runs = store.con.execute("SELECT ews_api_calls, graph_api_calls FROM runs ORDER BY started_at").fetchall()
    assert expected[0]["deltas"], "the first run planned nothing: the scenario tests nothing"
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert got[2] == expected[2]
    assert all(ews and graph for ews, graph in runs), f"the shards' calls are not counted with the run: {runs}"


def test_an_unreachable_scheduler_is_one_line_naming_the_address(world):
    world.configure()
    world.config_path.write_text(world.config_path.read_text() + SCALE.format(address="tcp://127.0.0.1:9"))
    cfg = load_config(world.config_path, env=world.env)
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}), pytest.raises(FatalError) as info:
        run_sync(cfg, world.today)
    assert "tcp://127.0.0.1:9" in str(info.value) and "[scale] dask_address" in str(info.value)


@pytest.mark.prefect
def test_in_a_flow_run_the_shards_are_prefect_tasks_on_the_cluster(tmp_path, prefect_harness, monkeypatch):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.sync import sync_flow

    with make_world(tmp_path, {ALICE_: "ews", BOB_: "graph"}) as world:
        world.configure()
        _seed(world)
        with _cluster(world, monkeypatch) as cluster:
            world.config_path.write_text(world.config_path.read_text() + SCALE.format(address=cluster.scheduler_address))
            state = sync_flow(str(world.config_path), world.today, return_state=True)
        summary = state.result()
        assert summary["status"] == "succeeded"
        assert len(mail_with(world, ALICE_, "SF planning")) == 1 and len(mail_with(world, BOB_, "SF review")) == 1
        assert [e["Subject"] for e in world.sf_events(BOB_) if e["Subject"] == "Mail customer call"]

        async def task_names():
            async with get_client() as client:
                runs = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
                return sorted((r.name, r.state_type.value) for r in runs)

        names = asyncio.run(task_names())
        shards = [n for n in names if n[0].startswith(("read mailboxes", "write mail"))]
        assert len([n for n in shards if n[0].startswith("read mailboxes")]) == 2, names
        assert shards and all(s == "COMPLETED" for _n, s in shards), names
