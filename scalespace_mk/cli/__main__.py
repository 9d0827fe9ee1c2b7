"""``python -m scalespace_mk.cli ...`` (used by torchrun launches)."""

import sys

from . import main

sys.exit(main())
