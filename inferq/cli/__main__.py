"""`python -m inferq.cli`: the `inferq` command (how supervised processes are started)."""

import sys

from inferq.cli.main import main

sys.exit(main())
