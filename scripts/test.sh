#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, then
# lints, type-checks, checks the layering, and runs pytest. CI's .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v skopeo >/dev/null 2>&1 || need_apt+=(skopeo)
command -v umoci >/dev/null 2>&1 || need_apt+=(umoci)
command -v containerd >/dev/null 2>&1 || need_apt+=(containerd)  # the mirror's real client
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "== installing gitsync with its test extra"
python3 -m pip install -q -e '.[test]'

echo "== ruff"
python3 -m ruff check gitsync tests bench
python3 -m ruff format --check gitsync tests bench
echo "== mypy --strict"
python3 -m mypy
echo "== import layers"
lint-imports

echo "== pytest"
set +e
python3 -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  # pytest's 5 means "no tests collected": a broken collection, not a pass.
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
