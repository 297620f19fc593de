"""``python -m mgmrn`` (and ``torchrun -m mgmrn``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
