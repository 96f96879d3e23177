"""livetrader's benchmarks: backtest throughput, live scale, crash-safety cost, restart, CLI start.

Run ``python -m bench`` (``--quick`` for a small sanity run, ``--json`` for one JSON document,
``--only NAME`` for one benchmark). The reference backtest workload is defined in
``bench/workload.py`` exactly as issue 8 states it, so other frameworks can run the same.
"""
