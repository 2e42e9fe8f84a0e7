"""``python -m deepbsde``: the same as the ``deepbsde`` command."""

import sys

from .cli import main

sys.exit(main())
