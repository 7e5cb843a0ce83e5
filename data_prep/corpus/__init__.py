"""The embedded corpora: the demo and the study (KJV verses spoken by espeak-ng voices: demo, demo_build,
selection, kjv, tts, render), random datasets for tests (random_dataset), and batches filled like the
reference implementation's for `make bench` (reference_fill)."""
