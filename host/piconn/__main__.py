"""`python -m piconn`: the command line (see piconn.commands)."""

import sys

from piconn.commands import main

sys.exit(main())
