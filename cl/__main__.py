"""`python -m cl`: the self-test of every front-end this environment runs
(`cl.selftest`)."""

import sys

from cl.selftest import main

if __name__ == "__main__":
    sys.exit(main())
