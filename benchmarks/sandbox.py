"""Both sandbox benchmarks in one go (issue 2): prints every figure and returns them.

    .venv/bin/python benchmarks/sandbox.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sandbox_exchange
import sandbox_salesforce


def main() -> dict:
    figures = {"salesforce": sandbox_salesforce.main(), "exchange": sandbox_exchange.main()}
    print(json.dumps(figures, indent=2, default=str))
    return figures


if __name__ == "__main__":
    main()
