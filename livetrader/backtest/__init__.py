"""The backtest: a fast-forward replay of candles through the live decision path."""
