"""``python -m livetrader.cli.app``: the same as the ``livetrader`` command."""

from livetrader.cli.app import main

main()  # exits itself (typer's standalone mode)
