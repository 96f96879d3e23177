"""The daemon process around the engine: systemd, status, recovery, console and logs."""
