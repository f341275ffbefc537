"""``python -m devstack``: README's run command (see :mod:`devstack.launcher`)."""

import sys

from devstack.launcher import main

sys.exit(main())
