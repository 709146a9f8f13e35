#!/bin/sh
# run_c_tests.sh DIR BIN... - runs each C test binary (with a time limit), prints the output of failures and
# a closing "N passed, N failed" line; exits non-zero if any failed.
dir=$1; shift
pass=0; fail=0; failed=""
for bin in "$@"; do
  name=$(basename "$bin")
  if out=$(timeout 300 "$bin" 2>&1); then
    pass=$((pass + 1)); printf '%s: %s\n' "$dir" "$(printf '%s\n' "$out" | tail -n 1)"
  else
    rc=$?; fail=$((fail + 1)); failed="$failed $name"
    printf '%s/%s FAILED (exit %s):\n%s\n' "$dir" "$name" "$rc" "$out"
  fi
done
echo "c-tests ($dir): $pass passed, $fail failed"
[ "$fail" -eq 0 ]
