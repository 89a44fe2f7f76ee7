"""`python -m sandbox` serves the servers until stopped and prints how to reach them as one JSON line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_sandbox_prints_connection_json_and_serves_the_seed(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--seed", str(ROOT / "data" / "demo-seed.toml"), "--workdir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        from simple_salesforce import Salesforce

        session = requests.Session()
        session.verify, session.trust_env = info["salesforce"]["ca_file"], False
        sf = Salesforce(instance_url=info["salesforce"]["instance_url"], session_id=info["salesforce"]["session_id"],
                        session=session, version="59.0")
        users = sf.query("SELECT Email FROM User WHERE Email LIKE '%@example.com'")["records"]
        assert {u["Email"] for u in users} >= {"alice@example.com", "bob@example.com", "dana@example.com"}
        state = requests.get(info["exchange"]["control"] + "state", timeout=10).json()
        assert "dana@example.com" in json.dumps(state)
        assert info["exchange"]["endpoint"].endswith("/EWS/Exchange.asmx")
        # The Graph entry is enough for msal and plain requests (one CA file for login and Graph).
        g = info["graph"]
        assert set(g) == {"tenant_id", "client_id", "client_secret", "certificate_file", "certificate_thumbprint",
                          "authority", "graph_url", "ca_file", "control"}
        import msal

        graph_session = requests.Session()
        graph_session.verify, graph_session.trust_env = g["ca_file"], False
        pem = Path(g["certificate_file"]).read_text()
        app = msal.ConfidentialClientApplication(g["client_id"], authority=g["authority"], http_client=graph_session,
                                                 client_credential={"private_key": pem,
                                                                    "thumbprint": g["certificate_thumbprint"]},
                                                 instance_discovery=False)
        token = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])["access_token"]
        user = graph_session.get(f"{g['graph_url']}/users/alice@example.com", timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})
        assert user.status_code == 200 and user.json()["mail"] == "alice@example.com"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
