"""Config validation: errors name the key and what is expected; secrets never come from the file."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from flows.config import ConfigError, load_config, parse_config

ENV = {"SF_SID": "00Dsecret!session", "EWS_PW": "hunter2"}


def _raw(**over):
    raw = {
        "salesforce": {"auth": "session", "instance_url": "https://127.0.0.1:1", "session_id_env": "SF_SID"},
        "exchange": {"endpoint": "http://127.0.0.1:2/EWS/Exchange.asmx", "username": "svc@example.com",
                     "password_env": "EWS_PW", "auth_type": "basic"},
        "users": [{"email": "Alice@Example.com", "start_date": date(2026, 1, 1)}],
    }
    for k, v in over.items():
        raw[k] = v
    return raw


def test_valid_config_has_defaults_and_lower_cases_users(tmp_path: Path):
    cfg = parse_config(_raw(), ENV, base=tmp_path)
    (user,) = cfg.users
    assert user.email == "alice@example.com" and user.mailbox == "alice@example.com"
    assert (user.direction, user.filter, user.send_external_invites) == ("both", "all", False)
    assert cfg.store_path == tmp_path / "data/calsync.duckdb"
    assert cfg.salesforce.session_id.get() == "00Dsecret!session"
    assert cfg.sync.mass_delete_share == 0.5 and cfg.sync.mass_delete_min == 4


def test_secret_never_prints():
    cfg = parse_config(_raw(), ENV)
    text = repr(cfg) + str(cfg.salesforce) + str(cfg.exchange)
    assert "hunter2" not in text and "00Dsecret" not in text
    assert "environment variable EWS_PW" in text


def test_literal_secret_in_file_is_refused():
    raw = _raw()
    raw["exchange"]["password"] = "hunter2"
    with pytest.raises(ConfigError, match=r"\[exchange\] password: secrets are not read from the config file"):
        parse_config(raw, ENV)


def test_missing_environment_variable_names_it():
    with pytest.raises(ConfigError, match="environment variable EWS_PW is not set"):
        parse_config(_raw(), {"SF_SID": "x"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["users"][0].update(direction="sideways"), r"\[users #1\] direction: expected one of both"),
        (lambda r: r["users"][0].update(filter="some"), r"\[users #1\] filter: expected one of updates_only"),
        (lambda r: r["users"][0].update(email="not-an-address"), r"\[users #1\] email: expected an email address"),
        (lambda r: r["users"][0].update(start_date="yesterday"), r"start_date: expected a TOML date"),
        (lambda r: r["users"].append({"email": "alice@example.com"}), "listed twice"),
        (lambda r: r["salesforce"].update(auth="password"), r"\[salesforce\] auth: expected one of jwt"),
        (lambda r: r["salesforce"].update(instance_url="http://x"), "expected an https:// URL"),
        (lambda r: r["exchange"].update(auth_type="kerberos"), r"\[exchange\] auth_type"),
        (lambda r: r.update(sync={"mass_delete_share": 2}), r"\[sync\] mass_delete_share"),
        (lambda r: r.update(sync={"batch_size": 500}), r"\[sync\] batch_size: expected a whole number from 1 to 200"),
        (lambda r: r.update(users=[]), r"\[\[users\]\]: expected at least one synced user"),
        (lambda r: r.update(extra={}), r"\[extra\]: unknown section"),
        (lambda r: r["users"][0].update(colour="blue"), r"\[users #1\] colour: unknown key"),
        (lambda r: r["users"][0].update(time_zone="Mars/Olympus"), r"\[users #1\] time_zone: expected an IANA"),
    ],
)
def test_invalid_values_name_the_key(mutate, message):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, ENV)


def test_jwt_needs_key_and_username():
    raw = _raw(salesforce={"auth": "jwt", "domain": "acme.my", "consumer_key_env": "SF_SID"})
    with pytest.raises(ConfigError, match=r"\[salesforce\] username: missing"):
        parse_config(raw, ENV)
    raw["salesforce"]["username"] = "int@acme.com"
    with pytest.raises(ConfigError, match=r"\[salesforce\] private_key: missing"):
        parse_config(raw, ENV)


def test_load_config_reports_bad_toml_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="no config file at"):
        load_config(tmp_path / "nope.toml", ENV)
    bad = tmp_path / "bad.toml"
    bad.write_text("[salesforce\nauth=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, ENV)


@pytest.mark.prefect
def test_secret_from_a_prefect_secret_block(prefect_harness):
    from prefect.blocks.system import Secret as SecretBlock

    SecretBlock(value="from-the-block").save("calsync-ews-password", overwrite=True)
    raw = _raw()
    del raw["exchange"]["password_env"]
    raw["exchange"]["password_block"] = "calsync-ews-password"
    cfg = parse_config(raw, ENV)
    assert cfg.exchange.password.get() == "from-the-block"
    assert "from-the-block" not in repr(cfg.exchange)
    raw["exchange"]["password_block"] = "no-such-block"
    with pytest.raises(ConfigError, match="cannot load the Prefect Secret block 'no-such-block'"):
        parse_config(raw, ENV)


# ------------------------------------------------------------------------------------------- [graph]

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIkey\n-----END PRIVATE KEY-----\n"
       "-----BEGIN CERTIFICATE-----\nMIIcert\n-----END CERTIFICATE-----\n")
GRAPH_ENV = {**ENV, "GRAPH_CERT": PEM, "GRAPH_SECRET": "s3cr3t~value"}


def _graph(**over):
    section = {"tenant_id": "acme.onmicrosoft.com", "client_id": "11111111-2222-3333-4444-555555555555",
               "certificate_env": "GRAPH_CERT"}
    section.update(over)
    return {k: v for k, v in section.items() if v is not None}


def test_graph_only_config_puts_every_user_on_graph(tmp_path: Path):
    raw = _raw(graph=_graph(internal_domains=["Acme.com"]))
    del raw["exchange"]
    cfg = parse_config(raw, GRAPH_ENV, base=tmp_path)
    assert cfg.exchange is None and cfg.users[0].mailbox_kind == "graph"
    assert cfg.graph.certificate.get() == PEM and cfg.graph.client_secret is None
    assert cfg.graph.internal_domains == ("acme.com",)
    assert (cfg.graph.authority_host, cfg.graph.graph_url) == ("https://login.microsoftonline.com",
                                                               "https://graph.microsoft.com/v1.0")
    assert "MIIkey" not in repr(cfg) and "environment variable GRAPH_CERT" in repr(cfg.graph)


def test_hybrid_config_needs_each_users_kind(tmp_path: Path):
    raw = _raw(graph=_graph(certificate_env=None, client_secret_env="GRAPH_SECRET"))
    with pytest.raises(ConfigError, match=r"\[users #1\] mailbox_kind: missing; with both \[exchange\] and \[graph\]"):
        parse_config(raw, GRAPH_ENV, base=tmp_path)
    raw["users"].append({"email": "bob@example.com", "mailbox_kind": "ews"})
    raw["sync"] = {"mailbox_kind": "graph"}
    cfg = parse_config(raw, GRAPH_ENV, base=tmp_path)
    assert [u.mailbox_kind for u in cfg.users] == ["graph", "ews"]
    assert cfg.graph.client_secret.get() == "s3cr3t~value" and "s3cr3t" not in repr(cfg)


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"certificate_env": None}, r"\[graph\] certificate: missing; set certificate_file"),
        ({"client_secret_env": "GRAPH_SECRET"}, r"\[graph\] certificate: give a certificate or a client secret, not both"),
        ({"certificate_env": "GRAPH_SECRET"}, r"\[graph\] certificate: environment variable GRAPH_SECRET must hold a PEM"),
        ({"tenant_id": None}, r"\[graph\] tenant_id: missing"),
        ({"client_secret": "literal"}, r"\[graph\] client_secret: secrets are not read from the config file"),
        ({"tenant": "typo"}, r"\[graph\] tenant: unknown key"),
        ({"graph_url": "http://graph.example"}, r"\[graph\] graph_url: expected an https:// URL"),
        ({"internal_domains": "acme.com"}, r"\[graph\] internal_domains: expected a list of domains"),
        ({"max_retry_wait_s": -1}, r"\[graph\] max_retry_wait_s: expected seconds from 0 to 3600"),
    ],
)
def test_graph_errors_name_the_key(graph, message):
    raw = _raw(graph=_graph(**graph))
    raw["sync"] = {"mailbox_kind": "graph"}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, GRAPH_ENV)


def test_a_users_kind_needs_its_section():
    raw = _raw()
    raw["users"][0]["mailbox_kind"] = "graph"
    with pytest.raises(ConfigError, match=r"\[users #1\] mailbox_kind: graph needs a \[graph\] section"):
        parse_config(raw, ENV)
    raw["users"][0]["mailbox_kind"] = "owa"
    with pytest.raises(ConfigError, match=r"\[users #1\] mailbox_kind: expected one of ews, graph"):
        parse_config(raw, ENV)
    del raw["exchange"]
    with pytest.raises(ConfigError, match=r"\[exchange\] / \[graph\]: missing"):
        parse_config(raw, ENV)


# ------------------------------------------------------------------------------- issue 11: typos, every error

@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ("exchange", "auth_typ", r"\[exchange\] auth_typ: unknown key \(did you mean auth_type\?\)"),
        ("sync", "batch_sise", r"\[sync\] batch_sise: unknown key \(did you mean batch_size\?\)"),
        ("sync", "mass_delete_shar", r"\[sync\] mass_delete_shar: unknown key \(did you mean mass_delete_share\?\)"),
        ("salesforce", "api_verson", r"\[salesforce\] api_verson: unknown key \(did you mean api_version\?\)"),
        ("store", "pth", r"\[store\] pth: unknown key \(did you mean path\?\)"),
        ("log", "lvl", r"\[log\] lvl: unknown key"),
    ],
)
def test_unknown_keys_are_refused_in_every_section(section, key, message):
    raw = _raw()
    raw.setdefault(section, {})[key] = "x"
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, ENV)


def test_every_error_in_the_file_is_reported_at_once(tmp_path: Path, capsys):
    from flows.cli import main

    path = tmp_path / "calsync.toml"
    path.write_text(
        '[salesforce]\nauth = "session"\ninstance_url = "http://insecure"\nsession_id_env = "NOPE_SID"\n'
        '[exchange]\nendpoint = "http://x/EWS/Exchange.asmx"\nusername = "svc@example.com"\npassword_env = "EWS_PW"\n'
        'auth_typ = "basic"\n'
        '[sync]\nbatch_sise = 10\nmass_delete_share = 3\n'
        '[[users]]\nemail = "alice@example.com"\ndirection = "sideways"\n'
        '[[users]]\nemail = "not-an-address"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    expected = [
        r"\[salesforce\] instance_url: expected an https:// URL",
        r"\[salesforce\] session_id_env: the environment variable NOPE_SID is not set",
        r"\[exchange\] auth_typ: unknown key",
        r"\[sync\] batch_sise: unknown key",
        r"\[sync\] mass_delete_share: expected a number in \(0, 1\]",
        r"\[users #1\] direction: expected one of both",
        r"\[users #2\] email: expected an email address",
    ]
    import re

    assert len(info.value.errors) == len(expected), info.value.errors
    for pattern, message in zip(expected, info.value.errors):
        assert re.search(pattern, message), (pattern, message)
    # The command line: one line per error, exit 2, no secret (the password variable is set: never echoed).
    import os

    os.environ["EWS_PW"] = "hunter2"
    try:
        assert main(["sync", "--config", str(path), "--no-prefect"]) == 2
    finally:
        del os.environ["EWS_PW"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(expected) and all(line.startswith("calsync: config error: [") for line in err), err
    assert "hunter2" not in "".join(err)


def test_file_paths_are_relative_to_the_config_folder(tmp_path: Path, monkeypatch):
    conf = tmp_path / "etc"
    (conf / "secrets").mkdir(parents=True)
    (conf / "secrets" / "ews.pw").write_text("from-a-file")
    (conf / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (conf / "calsync.toml").write_text(
        '[store]\npath = "state/calsync.duckdb"\n'
        '[salesforce]\nauth = "session"\ninstance_url = "https://127.0.0.1:1"\nsession_id_env = "SF_SID"\n'
        'ca_file = "ca.pem"\n'
        '[exchange]\nendpoint = "http://x/EWS/Exchange.asmx"\nusername = "svc@example.com"\n'
        'password_file = "secrets/ews.pw"\n'
        '[log]\nfile = "logs/calsync.log"\n'
        '[[users]]\nemail = "alice@example.com"\n')
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    cfg = load_config(conf / "calsync.toml", ENV)
    assert cfg.exchange.password.get() == "from-a-file"
    assert "from-a-file" not in repr(cfg.exchange) and str((conf / "secrets" / "ews.pw").resolve()) in repr(cfg.exchange)
    assert cfg.store_path == conf.resolve() / "state/calsync.duckdb"
    assert cfg.salesforce.ca_file == (conf / "ca.pem").resolve()
    assert cfg.log_file == conf.resolve() / "logs/calsync.log"


def test_the_shipped_example_config_is_valid(tmp_path: Path):
    """calsync.example.toml (hybrid: [exchange], [graph], users of both kinds, [notify], [log]) parses as shipped,
    its relative secret files resolved against its own folder."""
    example = Path(__file__).resolve().parents[2] / "calsync.example.toml"
    copy = tmp_path / "calsync.toml"
    copy.write_text(example.read_text())
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "salesforce.key").write_text("-----BEGIN PRIVATE KEY-----\nMIIkey\n-----END PRIVATE KEY-----\n")
    (tmp_path / "secrets" / "graph.pem").write_text(PEM)
    env = {"CALSYNC_SF_CONSUMER_KEY": "3MVG9key", "CALSYNC_EWS_PASSWORD": "pw",
           "CALSYNC_WEBHOOK_URL": "https://hooks.example.com/T000/B000/XXXX"}
    cfg = load_config(copy, env)
    assert (cfg.exchange is not None, cfg.graph is not None) == (True, True)
    assert {u.email: u.mailbox_kind for u in cfg.users} == {
        "alice@acme.com": "ews", "bob@acme.com": "graph", "carol@acme.com": "ews"}
    assert cfg.notify.webhook_url.get().startswith("https://hooks.example.com/")
    assert "XXXX" not in repr(cfg.notify) and cfg.retention_days == 90 and cfg.log.level == "INFO"
    assert cfg.salesforce.private_key.get().startswith("-----BEGIN PRIVATE KEY")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"notify": {}}, r"\[notify\]: give webhook_url_env"),
        ({"notify": {"block": "no-slash"}}, r"\[notify\] block: expected a saved Prefect notification block"),
        ({"notify": {"webhook_url_env": "EWS_PW"}}, r"\[notify\] webhook_url: environment variable EWS_PW must hold"),
        ({"notify": {"webhook_url": "https://literal"}}, r"\[notify\] webhook_url: secrets are not read"),
        ({"log": {"level": "LOUD"}}, r"\[log\] level: expected one of DEBUG, INFO"),
        ({"store": {"retention_days": -1}}, r"\[store\] retention_days: expected a whole number of days"),
    ],
)
def test_notify_log_and_retention_errors_name_the_key(section, message):
    raw = _raw(**section)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, ENV)
