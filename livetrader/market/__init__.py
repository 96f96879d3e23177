"""Where candles come from: the source protocol, the shared feed, the sim, candle files and ccxt."""
