"""check_shares.py COLLAPSED FUNC=PERCENT... [--tol PP] - the share of the profile's weight under each named
function (anywhere on the stack) must be within PP points (default 5) of the expected percent; also checks
that every stack under one of them goes through `via` functions when given as FUNC<VIA (e.g.
hot_loop_a<dispatch: dispatch must be the caller). Used by `make test-aarch64` on examples/native_demo.c's
output (50 / 33.3 / 16.7 % by construction)."""
import sys

def main(argv):
    tol = 5.0
    path, specs = argv[0], []
    for a in argv[1:]:
        if a.startswith("--tol="):
            tol = float(a[6:])
        else:
            name, pct = a.split("=")
            specs.append((name, float(pct)))
    total, under, bad = 0, {}, []
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames, w = stack.split(";"), int(n)
            total += w
            for spec, _ in specs:
                fn, _, via = spec.partition("<")
                if fn in frames:
                    under[spec] = under.get(spec, 0) + w
                    i = frames.index(fn)
                    if via and (i == 0 or frames[i - 1] != via):
                        bad.append(line.strip())
    ok = total > 0
    for spec, pct in specs:
        got = 100.0 * under.get(spec, 0) / total if total else 0.0
        good = abs(got - pct) <= tol
        ok = ok and good
        print("  %s %-24s %5.1f%% (expected %.1f%% +- %.0f)" % ("ok  " if good else "FAIL", spec, got, pct, tol))
    if bad:
        ok = False
        print("  FAIL %d stacks with the wrong caller, e.g. %s" % (len(bad), bad[0]))
    print("  %s %d sampling intervals in %s" % ("ok  " if total else "FAIL", total, path))
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
