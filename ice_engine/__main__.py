"""`python -m ice_engine`, and the `ice-engine` command's entry point."""

import signal
import sys


def run() -> int:
    """Load the CLI, then run it. Ctrl-C while it loads (asyncio, the driver, the core:
    its first ~0.1 s) ends it with status 130, as later, not with a traceback."""
    try:
        from .cli import main

        return main()
    except KeyboardInterrupt:
        return 130
    finally:  # from here a Ctrl-C ends the process as the signal does, not with a
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # traceback from the shutdown


if __name__ == "__main__":
    sys.exit(run())
