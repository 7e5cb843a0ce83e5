"""Likelihood benchmarks (spoken and written, all four directions) and held-out losses.

  benchmark.py   the JSONL format, reading/writing, provenance checks
  scoring.py     continuation sequences, packing into model rows, the jitted log-prob scorer
  stats.py       accuracy with shared credit for ties, 95% intervals
  runner.py      BenchmarkRunner / run_benchmarks (for the training loop), the result table
  checkpoint.py  read-only parameter restore
  main.py        python -m lst_jax.eval.main --config=... --workdir=... [--step=N]
"""
