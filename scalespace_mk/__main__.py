"""``python -m scalespace_mk ...``: the ``scalespace-mk`` command line."""

import sys

from scalespace_mk.cli import main

sys.exit(main())
