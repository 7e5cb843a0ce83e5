"""Decoding: LST and baseline, one token per step from caches (cache, baseline_step, lst_step)."""
