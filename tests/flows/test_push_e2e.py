"""R18 end to end: push one event by hand, then the ordinary sync (filter "updates only") keeps the pair."""

from __future__ import annotations

import argparse

import pytest

from flows.config import load_config
from flows.push import EventNotFound, add_commands, push
from tests.flows.conftest import at, user_block
from tests.flows.conftest import mail_with as _mail
from tests.flows.conftest import sf_with as _sf

ALICE, BOB = "alice@example.com", "bob@example.com"
CAROL = "carol@customer.example"




def test_pushed_salesforce_event_is_kept_up_to_date_by_updates_only(world):
    world.configure(user_block(ALICE, filter="updates_only"))
    cfg = load_config(world.config_path, env=world.env)
    sf_id = world.sb.salesforce.org.add_event(world.ids[ALICE], "Renewal", at(3, 9), at(3, 10),
                                              invitee_ids=[world.ids[CAROL]])
    world.sb.salesforce.org.add_event(world.ids[ALICE], "Not pushed", at(3, 11), at(3, 12))
    assert world.sync()["totals"]["deltas"] == 0  # updates only: nothing new
    s = push(cfg, "salesforce", sf_id, today=world.today)
    assert s["status"] == "succeeded" and s["totals"]["created"] == 1, s
    assert len(_mail(world, ALICE, "Renewal")) == 1 and _mail(world, ALICE, "Not pushed") == []
    world.salesforce().Event.update(sf_id, {"Subject": "Renewal (v2)", "StartDateTime": at(3, 13).isoformat(),
                                            "EndDateTime": at(3, 14).isoformat()})
    s2 = world.sync()
    assert s2["status"] == "succeeded", s2
    item = _mail(world, ALICE, "Renewal (v2)")
    assert len(item) == 1 and item[0]["start"] == at(3, 13) and _mail(world, ALICE, "Renewal") == []
    assert _mail(world, ALICE, "Not pushed") == []
    assert world.sync()["totals"]["deltas"] == 0


def test_pushed_mail_item_is_kept_up_to_date_and_deleted_with_it(world):
    world.configure(user_block(BOB, filter="updates_only"))
    cfg = load_config(world.config_path, env=world.env)
    em_id = world.sb.exchange.org.add_item(BOB, "Workshop", at(4, 9), at(4, 11), organizer=BOB,
                                           required_attendees=[CAROL])
    s = push(cfg, "email", em_id, today=world.today, user=BOB)
    assert s["status"] == "succeeded", s
    ev = _sf(world, BOB, "Workshop")
    assert len(ev) == 1
    acct = world.account(BOB)
    item = next(i for i in acct.calendar.all() if i.subject == "Workshop")
    item.subject = "Workshop (room B)"
    item.save(update_fields=["subject"])
    world.sync()
    assert len(_sf(world, BOB, "Workshop (room B)")) == 1
    item = next(i for i in acct.calendar.all() if i.subject == "Workshop (room B)")
    item.delete()
    world.sync()
    assert [e for e in _sf(world, BOB, "Workshop (room B)") if not e.get("IsDeleted")] == []


def test_push_by_cli_records_a_push_run(world, capsys):
    world.configure(user_block(ALICE, filter="updates_only"))
    sf_id = world.sb.salesforce.org.add_event(world.ids[ALICE], "CLI pushed", at(2, 9), at(2, 10))
    parser = argparse.ArgumentParser(prog="calsync")
    add_commands(parser.add_subparsers(dest="command", required=True))
    import os

    os.environ.update(world.env)
    args = parser.parse_args(["push", "--config", str(world.config_path), "--salesforce-id", sf_id, "--json"])
    assert args.func(args) == 0
    assert '"created": 1' in capsys.readouterr().out
    assert len(_mail(world, ALICE, "CLI pushed")) == 1
    runs = world.query("SELECT mode, status FROM runs")
    assert runs == [("push", "succeeded")]
    assert world.query("SELECT count(*) FROM event_snapshots")[0][0] >= 1
    with pytest.raises(SystemExit):
        parser.parse_args(["push", "--config", str(world.config_path)])  # one id is required


def test_push_unknown_or_private_event(world, capsys):
    world.configure(user_block(ALICE, filter="updates_only", direction="email_to_salesforce"))
    cfg = load_config(world.config_path, env=world.env)
    with pytest.raises(EventNotFound, match="no Salesforce Event 00U000000000000AAA owned by an enabled user"):
        push(cfg, "salesforce", "00U000000000000AAA", today=world.today)
    assert world.query("SELECT status, failed_stage FROM runs") == [("failed", "extract")]
    with pytest.raises(EventNotFound, match=r"item AAMk-nope of mailbox alice@example.com could not be read"):
        push(cfg, "email", "AAMk-nope", today=world.today, user=ALICE)
    gone = world.sb.exchange.org.add_item(ALICE, "Deleted before the push", at(2, 9), at(2, 10))
    next(i for i in world.account(ALICE).calendar.all() if i.id == gone).delete()
    with pytest.raises(EventNotFound, match=rf"no item {gone} in the calendar of alice@example.com"):
        push(cfg, "email", gone, today=world.today, user=ALICE)
    # The command line: one line naming the id, a non-zero exit.
    import os

    os.environ.update(world.env)
    from flows.cli import main

    assert main(["push", "--config", str(world.config_path), "--salesforce-id", "00U000000000000AAA"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "EventNotFound: no Salesforce Event 00U000000000000AAA" in err[0], err
    private = world.sb.salesforce.org.add_event(world.ids[ALICE], "Dentist", at(1, 8), at(1, 9), is_private=True,
                                                description="root canal")
    push(cfg, "salesforce", private, today=world.today)
    item = [i for i in world.mail_items(ALICE) if i["start"] == at(1, 8)]
    assert [i["subject"] for i in item] == ["Private"] and not (item[0]["body"] or "")
