"""``python -m livetrader.cli.app``: the same as the ``livetrader`` command."""

import sys

from livetrader.cli.app import main

sys.exit(main())
