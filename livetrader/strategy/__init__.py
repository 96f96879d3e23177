"""What a strategy author writes, sees and registers: the base class, the context, risk profiles, the loader."""
