"""Durable storage under the data directory (docs/behaviour.md §9).

Mechanisms only: atomic file replacement (``atomic``), the single-daemon directory lock
(``lock``), the fsync'ed per-pair event journal that serves as the write-ahead log
(``journal``), and moving damaged files aside instead of deleting them (``quarantine``).
The engine decides what to write and when; these modules make each write survive a crash.
"""
