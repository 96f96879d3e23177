"""Real exchanges through ccxt."""
