"""A folder of generated samples to listen to: WAVs, unit and text files, samples.jsonl, index.html.

Each sample is a dict with at least "id", "task" and "stop"; "prompt_text" /
"text" (strings), "prompt_units" / "units" (ids) and "prompt_wave" / "wave"
(float32 arrays at "rate") are written when present, and "asr" (a transcript;
"ceiling_asr": that of the ground-truth units through the vocoder) is shown
beside the audio; "seconds" (generated speech's length) beside how it ended
("stop": eos, switch, length). index.html is one static page (no scripts) with
an audio player per waveform.
"""

from __future__ import annotations

import html
import json
import os

import numpy as np

from lst_jax import storage

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.4em;vertical-align:top;max-width:28em}}audio{{width:16em}}</style>
</head><body><h1>{title}</h1><p>{summary}</p>
<table><tr><th>sample</th><th>task</th><th>prompt</th><th>generated</th><th>ASR transcript</th>
<th>ended (length)</th></tr>
{rows}
</table></body></html>
"""


def write(out_dir: str, samples: list[dict], title: str, summary: str = "") -> str:
  """Writes every sample's files and the two indexes (into a local folder or a gs:// one);
  returns index.html's path."""
  with storage.local_folder(out_dir) as folder:
    _write(folder, samples, title, summary)
  return storage.join(out_dir, "index.html")


def _write(out_dir: str, samples: list[dict], title: str, summary: str) -> None:
  import soundfile
  rows, lines = [], []
  for s in samples:
    record = {k: v for k, v in s.items() if k not in ("wave", "prompt_wave", "units", "prompt_units")}
    cells = {}
    for key in ("prompt", "generated"):
      wave_key, units_key, text_key = (("prompt_wave", "prompt_units", "prompt_text") if key == "prompt"
                                       else ("wave", "units", "text"))
      parts = []
      if s.get(wave_key) is not None and len(s[wave_key]) == 0:
        parts.append("(no speech)")   # an empty WAV would show as an endless player
      elif s.get(wave_key) is not None:
        name = f"{s['id']}_{key}.wav"
        soundfile.write(os.path.join(out_dir, name), np.asarray(s[wave_key], np.float32), s["rate"])
        record[f"{key}_wav"] = name
        parts.append(f'<audio controls preload="metadata" src="{html.escape(name)}"></audio>')
      if s.get(units_key) is not None:
        name = f"{s['id']}_{key}.units.txt"
        with open(os.path.join(out_dir, name), "w") as f:
          f.write(" ".join(str(int(u)) for u in s[units_key]) + "\n")
        record[f"{key}_units"] = name
      if s.get(text_key) is not None:
        name = f"{s['id']}_{key}.txt"
        with open(os.path.join(out_dir, name), "w") as f:
          f.write(s[text_key] + "\n")
        parts.append(html.escape(s[text_key]))
      cells[key] = "<br>".join(parts)
    lines.append(json.dumps(record))
    heard = html.escape(s.get("asr", ""))
    if s.get("ceiling_asr") is not None:
      heard += f"<br><i>ceiling (ground-truth units):</i> {html.escape(s['ceiling_asr'])}"
    ended = html.escape(s["stop"]) + (f" ({s['seconds']:.2f} s)" if "seconds" in s else "")
    rows.append(f"<tr><td>{html.escape(s['id'])}</td><td>{html.escape(s['task'])}</td><td>{cells['prompt']}</td>"
                f"<td>{cells['generated']}</td><td>{heard}</td><td>{ended}</td></tr>")
  with open(os.path.join(out_dir, "samples.jsonl"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(out_dir, "index.html"), "w") as f:
    f.write(PAGE.format(title=html.escape(title), summary=html.escape(summary), rows="\n".join(rows)))
