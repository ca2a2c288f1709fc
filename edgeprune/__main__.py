"""``python -m edgeprune``."""
import sys

from edgeprune.cli import main

if __name__ == "__main__":
    sys.exit(main())
