"""`python -m shapedce ...` is the same as the `shapedce` command."""

import sys

from .cli import main

sys.exit(main())
