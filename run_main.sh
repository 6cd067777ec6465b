#!/usr/bin/env bash
# Start the pipeline from config.toml; arguments pass through to `hftagg run`
# (e.g. ./run_main.sh --duration 10). Builds the environment first if needed.
set -euo pipefail
cd "$(dirname "$0")"
if ! sha256sum --status -c .venv/.hftagg-built 2>/dev/null; then
    ./build.sh
fi
exec .venv/bin/hftagg run "$@"
