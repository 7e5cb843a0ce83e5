"""Flax NNX modules: encoder-patcher, global latent transformer, local decoder, baseline.

Shape suffixes (nanodo's convention, `x_BTD`): one letter per axis, and each letter means one
thing across lst_jax and data_prep. This is their one legend.

  B  batch rows                          T  token slots per row
  P  patch slots (global positions)      L  tokens gathered per patch (patch_gather_width)
  K  the cross_attn_k vectors of a patch Q  queries of an attention
  S  keys of an attention (in decoding: cache slots)
  N  attention heads                     H  head dimension
  I  rotary frequencies (H / 2)          D  local (or the baseline's) model width
  G  global model width                  V  vocabulary
  U  key units of windowed cross-attention (tokens or patches)
  R  vectors per query position, Z vectors per key unit, of windowed cross-attention
  J  query blocks of windowed cross-attention
  W  words                               2  a (start, end) pair
  F  audio frames (25 Hz)                E  feature values per frame
  A  audio samples per analysis window   Y  FFT bins
  M  mel bins                            C  codebook entries (centroids)
  X  any leading axes                    _  any further axes (x_B_: [B, ...])
"""
