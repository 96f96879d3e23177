"""The live runtime: pairs, their supervised loops on one clock (engine, metronome), the Python API."""
