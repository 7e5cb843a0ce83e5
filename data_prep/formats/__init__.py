"""Input formats of `python -m data_prep.build`, one reader module each.

A reader module has
  KIND                         "speech" or "text": the kind of records it makes
  list_sources(path)           -> small picklable sources in a fixed order (the record
                                  order); cheap: finds files and line offsets only
  parse(sources, options)      -> one Item or InputError per source, in order
Listing runs once in the parent; parsing runs in worker processes, chunk by chunk.
"""

from __future__ import annotations

from data_prep.formats import audio_folder, lst_jsonl, manifest_jsonl, plain_text

READERS = {"lst_jsonl": lst_jsonl, "manifest": manifest_jsonl, "audio": audio_folder, "text": plain_text}
