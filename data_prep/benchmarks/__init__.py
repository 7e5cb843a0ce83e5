"""The built-in benchmarks (python -m data_prep.benchmarks.builtin): spoken cloze (builtin) and sWUGGY-like
word / non-word pairs (lexical), made from verses and words of the demo corpus."""
