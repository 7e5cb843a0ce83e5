"""Datasets after they are built: verify (every shard against the manifest), merge (two datasets into one),
stats (hours, units, words, patch lengths), and bench_loader (the input pipeline's throughput)."""
