"""`python -m piconn`: the command line (see piconn.cli)."""

import sys

from piconn.cli import main

sys.exit(main())
