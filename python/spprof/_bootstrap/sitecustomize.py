# Bootstrap of `spprof record` (spprof/_cli.py): this directory is put first on PYTHONPATH, so the interpreter
# imports this file at start-up, before the program's first line. It
#   1. takes itself and its variables out of the way: this directory leaves sys.path, PYTHONPATH and the
#      SPPROF_RECORD_* variables are restored / removed from os.environ (child processes are not profiled;
#      with record --subprocesses they stay, and every Python process that starts with them is profiled);
#   2. starts spprof (imported from SPPROF_RECORD_PKGDIR) in the process that `spprof record` exec'd
#      (SPPROF_RECORD_PID), with the profile written at exit (see spprof/_record.py);
#   3. chains to the next sitecustomize on the path, if there is one (e.g. Debian's).
# If spprof cannot start, the program still runs, unprofiled, with a message on stderr.


def _spprof_record_bootstrap():
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = os.environ
    prefix = "SPPROF_RECORD_"
    pkgdir = env.get(prefix + "PKGDIR", "")
    target_pid = env.get(prefix + "PID", "")

    def same(p):
        try:
            return os.path.abspath(p or os.curdir) == here
        except Exception:
            return False

    sys.path[:] = [p for p in sys.path if not same(p)]
    # record --subprocesses: every Python process started from here on runs this file too, so PYTHONPATH and
    # the SPPROF_RECORD_* variables stay in the environment (the program sees them)
    follow = env.get(prefix + "SUBPROCESSES") == "1"
    if prefix + "PYTHONPATH" in env and not follow:  # restore the program's PYTHONPATH for its own children
        orig = env[prefix + "PYTHONPATH"]
        if env.get(prefix + "HAD_PYTHONPATH") == "1":
            env["PYTHONPATH"] = orig
        else:
            env.pop("PYTHONPATH", None)

    # Linux: `record` exec'd this process (same pid). Windows: it started this process as its child.
    parent_pid = env.get(prefix + "PARENT_PID", "")
    mine = target_pid == str(os.getpid()) or (parent_pid != "" and parent_pid == str(os.getppid())) or follow
    if mine:
        added = False
        try:
            if pkgdir and pkgdir not in sys.path:
                sys.path.insert(0, pkgdir)
                added = True
            import spprof._record

            spprof._record.begin()
        except BaseException as e:  # never stop the program from running
            if isinstance(e, (SystemExit, KeyboardInterrupt)):
                raise
            sys.stderr.write(f"spprof record: cannot profile this program ({type(e).__name__}: {e}); "
                             "it runs unprofiled\n")
        finally:
            if added:
                try:
                    sys.path.remove(pkgdir)
                except ValueError:
                    pass
    for k in [k for k in env if k.startswith(prefix)] if not follow else []:
        del env[k]


def _spprof_chain_sitecustomize():
    import sys

    me = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  (the next one on sys.path, now that our directory is gone)
    except ImportError as exc:
        if exc.name != "sitecustomize":
            if me is not None:
                sys.modules["sitecustomize"] = me
            raise
        if me is not None:
            sys.modules["sitecustomize"] = me


_spprof_record_bootstrap()
_spprof_chain_sitecustomize()
