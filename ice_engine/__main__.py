"""`python -m ice_engine`: the same as the `ice-engine` command."""

import sys

from .cli import main

sys.exit(main())
