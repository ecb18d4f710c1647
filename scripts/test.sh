#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, then
# lints, type-checks, checks the layering, and runs pytest. CI's .ci/run calls exactly this.
#
# Python packages come from a virtual environment of its own (.venv-test/, made here
# when missing, without the system site-packages): whatever a machine has installed
# system-wide (an older PyYAML, say) can then never hide what `pip install` gives a user.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v umoci >/dev/null 2>&1 || need_apt+=(umoci)
command -v containerd >/dev/null 2>&1 || need_apt+=(containerd)  # the mirror's real client
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)  # for python3 -m venv
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

venv=.venv-test
# A venv whose interpreter no longer runs (Python upgraded or removed) is made again.
if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
  echo "== creating the test virtual environment $venv/"
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
python="$PWD/$venv/bin/python"

# Every run: pip install -e is idempotent, and picks up a changed pyproject.toml.
echo "== installing gitsync with its test extra into $venv/"
"$python" -m pip install -q -e '.[test]'
"$python" -c 'import sys, yaml; print(f"   Python {sys.version.split()[0]}, PyYAML {yaml.__version__}")'

# As if activated: tests that start console scripts by name find the venv's.
export VIRTUAL_ENV="$PWD/$venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"

echo "== ruff"
"$python" -m ruff check gitsync tests bench
"$python" -m ruff format --check gitsync tests bench
echo "== mypy --strict"
"$python" -m mypy
echo "== import layers"
"$VIRTUAL_ENV/bin/lint-imports"

echo "== pytest"
set +e
"$python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  # pytest's 5 means "no tests collected": a broken collection, not a pass.
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
