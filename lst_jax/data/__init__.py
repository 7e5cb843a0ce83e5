"""Records, interleaving, patching, packing and the Grain input pipeline; and what turns audio
and text into ids (audio, features, codebook, tokenizer), shared by evaluation and data_prep."""
