#!/bin/sh
# benchmarks/install-peers.sh VENV PYTHON - the benchmark venv: the peer profilers and matplotlib from PyPI.
# Each package is installed on its own, so one that cannot install here (say, vmprof on a new Python) is
# reported and skipped by benchmarks/peers.py instead of stopping the run. Idempotent.
venv=${1:-build/bench-venv}; py=${2:-python3}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv" || exit 1
# pip's own exit status (a pipe into grep would report grep's: "did not install" for every package that did)
pip() {
  out=$("$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1); rc=$?
  printf '%s\n' "$out" | grep -v -i -e 'warning' -e '^$'
  return $rc
}
for pkg in matplotlib numpy py-spy pyinstrument yappi vmprof memray pyperformance pyperf; do
  mod=$(echo "$pkg" | tr - _)
  case $pkg in py-spy) [ -x "$venv/bin/py-spy" ] && continue ;; *) "$venv/bin/python" -c "import $mod" 2>/dev/null && continue ;; esac
  echo "install-peers: $pkg"
  pip "$pkg" || echo "install-peers: $pkg did not install (peers.py will skip it)"
done
# Austin: the newest austin-dist binary may need a newer glibc than this machine's; fall back to 3.7.
if ! "$venv/bin/austin" --version >/dev/null 2>&1; then
  echo "install-peers: austin-dist"
  pip austin-dist
  "$venv/bin/austin" --version >/dev/null 2>&1 || { echo "install-peers: newest austin does not run here, trying austin-dist 3.7.0"; pip "austin-dist==3.7.0"; }
fi
exit 0
