"""``python -m stream``: the same as the ``synthguard`` command."""

import sys

from stream.cli import main

sys.exit(main())
