"""Raw corpora -> tokenizer, speech units, word alignments -> ArrayRecord shards + manifest.

`python -m data_prep.demo` builds the embedded demo corpus (KJV text, espeak-ng voices).
"""
