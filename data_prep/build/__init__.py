"""python -m data_prep.build: your data -> a dataset, as a chain of Apache Beam pipelines.

  cli            the command line (flags, exit codes) -> pipeline.build
  plan           what a build writes: the input's options and tag, the directory's manifest
  pipeline       the stages in order, and the convert stage's progress
  vocab          tokenizer and quantizer (transcripts and features read by pipelines)
  shard_plan     each shard's entries, saved for the workers
  shard_job      one shard's conversion (the ConvertShards DoFn), its fingerprint and reuse
  convert        one entry -> one record (pure)
  journal        per-shard entries a rerun reuses; the local directory lock
  dataset_checks unique ids, inputs added twice, split overlap (a Beam pipeline)
  finish         errors file, manifest (last), stale files removed
  beam_local, beam_options, beam_worker, worker_status
                 the runner: Beam's local one with worker processes watched, or a remote one
"""
