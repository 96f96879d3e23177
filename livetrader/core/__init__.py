"""The pure core: every trading decision, with no I/O, no clock, no asyncio and no logging."""
