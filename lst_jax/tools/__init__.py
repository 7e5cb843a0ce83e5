"""Command-line tools: benchmarks and inspection."""
