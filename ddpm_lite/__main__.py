"""``python -m ddpm_lite ...`` is the ``ddpm-lite`` command (see :mod:`ddpm_lite.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
