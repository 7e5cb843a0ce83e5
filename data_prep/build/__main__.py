"""python -m data_prep.build: data_prep/build/cli.py."""

import sys

from data_prep.build.cli import main

sys.exit(main())
