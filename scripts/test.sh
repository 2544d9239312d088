#!/usr/bin/env bash
# The whole check, as CI runs it: install, provision what the tests need, lint, then pytest.
# Safe to re-run; prints little unless something fails. Extra arguments go to pytest, e.g.
#   scripts/test.sh tests/unit -k tokens
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Run a noisy command silently; show its output only if it fails.
quietly() {
    local log
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then
        echo "FAILED: $*" >&2
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

export DEBIAN_FRONTEND=noninteractive  # apt-get must never prompt (CI has no terminal)

apt_install() {
    quietly apt-get update
    quietly apt-get install -y -o DPkg::Lock::Timeout=120 "$@"
}

# a) Python environment.
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Bytecode caches on, whatever the caller's environment says: with PYTHONDONTWRITEBYTECODE set,
# each of the suite's few hundred `idp` processes compiled idp from source again (0.27 of its
# 1.4 CPU-seconds), and each pytest worker rewrote every test module's assertions again.
unset PYTHONDONTWRITEBYTECODE
if [[ ! -x .venv/bin/python ]]; then
    # Debian ships the venv module separately; install it if the first attempt fails.
    python3 -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv; python3 -m venv .venv; }
fi
quietly .venv/bin/python -m pip install --upgrade pip
quietly .venv/bin/python -m pip install -e '.[test]'

# b) Browser tests drive Debian's chromium through Playwright. Playwright's own browser download
#    (`playwright install`) is deliberately not used: it needs a CDN this environment cannot reach.
if [[ ! -x /usr/bin/chromium ]]; then
    apt_install chromium
fi
# The multi-node tests put Debian's haproxy in front of three idp nodes.
if [[ ! -x /usr/sbin/haproxy ]]; then
    apt_install haproxy
fi
# The backup tests run the commands docs/operations.md gives (sqlite3 .backup; pg_dump comes with
# PostgreSQL).
if [[ ! -x /usr/bin/sqlite3 ]]; then
    apt_install sqlite3
fi
# The outage tests drop a test proxy's packets on loopback with iptables
# (tests/support/black_hole.py), as a vanished database host does.
if [[ ! -x /usr/sbin/iptables ]]; then
    apt_install iptables
fi
# The benchmark's side-by-side with the peer drives both servers with wrk (bench/wrk.py), and
# tests/functional/test_bench_wrk.py runs its refresh chains through it.
if [[ ! -x /usr/bin/wrk ]]; then
    apt_install wrk
fi

# The container tests (tests/container) build the Dockerfile with Debian's podman, rootful, on
# runc, from a python:3.11-slim stand-in that mmdebstrap makes (scripts/container-image.sh).
if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
    || ! command -v mmdebstrap >/dev/null; then
    apt_install --no-install-recommends podman runc mmdebstrap
fi

# c) Interop tests run real relying-party libraries (openid-client) under node.
if [[ -f tests/interop/package.json ]]; then
    (
        cd tests/interop
        npm_flags=(--no-audit --no-fund --loglevel=error)
        if [[ -f package-lock.json ]]; then
            # npm ci wipes node_modules; skip it when the installed tree is newer than the lock.
            if [[ ! node_modules/.package-lock.json -nt package-lock.json ]] \
                || [[ package.json -nt node_modules/.package-lock.json ]]; then
                quietly npm ci "${npm_flags[@]}"
            fi
        else
            quietly npm install "${npm_flags[@]}"
        fi
    )
fi

# d) Services: PostgreSQL for the storage tests, Redis for shared rate limits and sessions.
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    # shellcheck disable=SC2046  # one directory per installed major version; there is one
    quietly pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start
fi
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    quietly redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
for _ in $(seq 60); do
    if pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
        break
    fi
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }

# e) Lint and types (configuration lives in pyproject.toml).
quietly .venv/bin/ruff check .
quietly .venv/bin/ruff format --check .
quietly .venv/bin/mypy

# f) The suite. Tests marked `postgres` also run against this database. --dist loadfile keeps
#    tests that share an xdist_group mark (e.g. one live server) on the same worker. The suite
#    includes the dependency-floor run (marker `floors`, tests/floors/): it installs the floor
#    version of every runtime dependency into a virtualenv of its own in ~/.cache/idp-floors/
#    (reused by every clone while the dependencies are unchanged) and runs the unit and protocol tests there, in a separate
#    process; `scripts/test.sh -m floors` runs it alone, `-m "not floors"` leaves it out. The
#    container tests (marker `container`, tests/container/) build the image when the Dockerfile,
#    pyproject.toml or the code changed (scripts/container-image.sh) and run it under podman.
export IDP_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test
# --durations: the slowest tests are named at the end of every run, so CI shows where the time goes.
# One worker more than the CPUs: many tests spend their time waiting for a server or a
# subprocess they started, and a spare worker keeps both CPUs busy meanwhile.
exec .venv/bin/python -m pytest -n "$(($(nproc) + 1))" --dist loadfile --no-loadscope-reorder --durations=25 "$@"
