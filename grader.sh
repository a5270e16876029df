#!/usr/bin/env bash
# Bootstrap and entry point, for a fresh Debian 12 machine as root (idempotent):
#   ./grader.sh run reference/taskmonitor    sets everything up, then grades the reference
#   ./grader.sh test                         sets everything up, then runs the linter and the
#                                            whole test suite
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
    # Every profile is provisioned first (the tests build and boot on every kernel, the debug
    # one included), and the docker backend too: its tests run a Docker engine, started here
    # if needed.
    "$venv/bin/grader" setup --all --docker
    # Test-only tools: headless Chromium and its driver for the tests of the HTML pages.
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "[grader.sh] installing chromium and chromium-driver (browser tests)" >&2
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
                || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
        fi
    fi
    # The linter, then the tests; the exit status is non-zero if either fails.
    lint=0
    "$venv/bin/ruff" check . || lint=$?
    status=0
    "$venv/bin/python" -m pytest -ra "$@" || status=$?
    if [ "$lint" != 0 ]; then
        echo "[grader.sh] ruff found problems (see above)" >&2
        [ "$status" = 0 ] && status=$lint
    fi
    exit "$status"
fi
exec "$venv/bin/grader" "$@"
