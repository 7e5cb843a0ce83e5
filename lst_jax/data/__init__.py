"""Records, interleaving, patching, packing and the Grain input pipeline."""
