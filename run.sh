#!/usr/bin/env bash
# calsync's two entry points on a fresh machine. Sets itself up the first time (a virtual
# environment in .venv with the pinned packages), then:
#   ./run.sh demo    sync a seeded local sandbox org twice (Salesforce, Exchange EWS and Graph stand-ins)
#   ./run.sh test    the whole test suite (extra arguments go to pytest)
#   ./run.sh calsync ARGS...   any calsync command
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setting up .venv (first run only)..." >&2
  "$PYTHON" -m venv .venv
fi
# Reinstall when pyproject.toml changes.
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" >&2
  rm -f .venv/.installed-* && touch "$stamp"
fi

# Prefect runs in ephemeral mode (no server): keep its home inside the project, quiet.
export PREFECT_HOME="${PREFECT_HOME:-$PWD/data/prefect}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_LOGGING_LEVEL="${PREFECT_LOGGING_LEVEL:-WARNING}"

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo) exec .venv/bin/calsync demo "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  calsync) exec .venv/bin/calsync "$@" ;;
  *) echo "usage: ./run.sh demo | test [pytest args] | calsync ARGS" >&2; exit 2 ;;
esac
