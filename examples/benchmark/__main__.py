"""`python -m examples.benchmark`: see the package's docstring."""

import sys

from examples.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
