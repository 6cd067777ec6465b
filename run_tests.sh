#!/usr/bin/env bash
# Set up what the tests need (./build.sh when the environment is missing or stale) and run them.
# Arguments pass through to pytest. Exit code 5 (no tests collected) is a failure.
set -uo pipefail
cd "$(dirname "$0")"
if ! sha256sum --status -c .venv/.hftagg-built 2>/dev/null; then
    ./build.sh || exit 1
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run_tests.sh: pytest collected no tests; that is a failure" >&2
    exit 1
fi
exit "$rc"
