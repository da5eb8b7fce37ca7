"""`python -m bus` is the `bus` command."""

import sys

from bus.cli import main

sys.exit(main())
