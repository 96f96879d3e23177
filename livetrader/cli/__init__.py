"""The ``livetrader`` command: parse, call, print. Nothing imports this package."""
