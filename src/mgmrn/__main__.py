"""``python -m mgmrn`` (and ``torchrun -m mgmrn``) runs the command line."""

import sys

from mgmrn.cli import main

sys.exit(main())
