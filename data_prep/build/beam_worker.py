"""A worker process of the local runner (python -m data_prep.build.beam_worker): Beam's SDK harness with
only errors on stderr, so a build shows its own progress lines, not each worker's start-up notes."""

import logging
import sys


def main() -> None:
  handler = logging.StreamHandler()
  handler.setLevel(logging.ERROR)
  logging.getLogger().addHandler(handler)
  from apache_beam.runners.worker import sdk_worker_main
  sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
  main()
