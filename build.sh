#!/usr/bin/env bash
# One-time setup on a fresh machine: virtualenv, package with dev extras, warm numba kernels,
# self-check of the default config. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "build.sh: hftagg needs Python >= 3.11; found $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "build.sh: creating .venv"
    "$PYTHON" -m venv .venv
fi
echo "build.sh: installing hftagg and its dev extras"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# QuickFIX is the reference peer of the FIX interop tests. `pip install quickfix` compiles C++
# for ~6 minutes once; pip caches the wheel, so later builds on the machine take seconds. It is
# kept out of the dev extras so a machine where it cannot build still gets a working hftagg (the
# interop tests then skip, saying why).
if ! .venv/bin/python -c "import quickfix" 2>/dev/null; then
    echo "build.sh: installing quickfix (FIX interop test peer; first build takes minutes)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check quickfix \
        || echo "build.sh: WARNING: quickfix did not install; FIX interop tests will be skipped" >&2
fi
echo "build.sh: warming compiled kernels"
.venv/bin/hftagg warm
echo "build.sh: self-check"
.venv/bin/hftagg config validate config.toml
sha256sum pyproject.toml > .venv/.hftagg-built
echo "build.sh: done. Run ./run_main.sh"
