"""What a person reads: markdown reports, statistics tables, equity charts."""
