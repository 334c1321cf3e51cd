"""`python -m core.cli` = the `unet3d` CLI."""

import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main())
