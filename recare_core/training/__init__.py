"""Method-independent training infrastructure: backend interface, training run, guidance, sampling, weight updates, checkpointing, layer selection."""
