"""Sources of 1-minute candles: ``sim`` (embedded), ``files`` (CSV/JSON replay), and ccxt exchanges."""
