"""The `calsync` command line: sync with a table or JSON, clear config errors, history."""

from __future__ import annotations

import json

from flows.cli import main
from tests.flows.conftest import at

ALICE = "alice@example.com"


def test_sync_json_summary_names_ids_per_side(world, monkeypatch, capsys):
    world.configure()
    for k, v in world.env.items():
        monkeypatch.setenv(k, v)
    sf_id = world.sb.salesforce.org.add_event(world.ids[ALICE], "CLI meeting", at(1, 9), at(1, 10))
    for _ in range(2):
        world.sb.exchange.org.add_item(ALICE, "Twice", at(2, 9), at(2, 10))
    code = main(["sync", "--config", str(world.config_path), "--json", "--no-prefect",
                 "--today", world.today.isoformat()])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["status"] == "succeeded"
    alice = out["users"][ALICE]
    (created,) = alice["created"]["email"]
    assert created == next(i["id"] for i in world.mail_items(ALICE) if i["subject"] == "CLI meeting")
    assert alice["pairs_made"] == 1 and alice["duplicates"] == 2
    assert world.query("SELECT sf_id FROM pairs")[0][0] == sf_id

    code = main(["sync", "--config", str(world.config_path), "--no-prefect"])
    text = capsys.readouterr().out
    assert code == 0 and "total: 0 deltas" in text and "SF+" in text

    assert main(["history", "--config", str(world.config_path)]) == 0
    assert "succeeded" in capsys.readouterr().out


def test_config_error_exits_2_and_names_the_key(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[salesforce]\nauth = "password"\n')
    assert main(["sync", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "[salesforce] auth: expected one of jwt" in err
