"""`python -m sandbox` serves both servers until stopped and prints how to reach them as one JSON line."""

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
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
