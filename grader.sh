#!/usr/bin/env bash
# Bootstrap and entry point, for a fresh Debian 12 machine as root (idempotent):
#   ./grader.sh run reference/taskmonitor    sets everything up, then grades the reference
#   ./grader.sh test                         sets everything up, then runs the whole test suite
#   ./grader.sh ARGS...                      any other grader command (setup, run, demo, report)
# It installs python3-venv if needed, makes .venv with the project in it, and lets
# `grader setup` install the host packages and provision the kernels (as root, with apt-get).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
venv="$here/.venv"

if ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[grader.sh] installing python3 and python3-venv" >&2
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null
    else
        echo "grader.sh: Python 3.11+ with venv is needed: apt-get install -y python3 python3-venv" >&2
        exit 4
    fi
fi
stamp="$venv/.grader-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[grader.sh] creating $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi

if [ "${1:-}" = "test" ]; then
    shift
    # Every profile is provisioned first (the tests build and boot on all three kernels), and
    # the docker backend too: its tests run a Docker engine, started here if needed.
    "$venv/bin/grader" setup --all --docker
    exec "$venv/bin/python" -m pytest -ra "$@"
fi
exec "$venv/bin/grader" "$@"
