"""python -m spprof: the command line (spprof._cli), as the `spprof` command."""
import sys

from spprof._cli import main

if __name__ == "__main__":
    sys.exit(main())
