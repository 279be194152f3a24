"""``python -m fptbench ...`` is the ``fptbench`` command."""

import sys

from fptbench.cli import main

sys.exit(main())
