"""`python -m ice_engine`, and the `ice-engine` command's entry point."""

import signal
import sys
from collections.abc import Callable

_MASKS = sys.platform != "win32"  # Windows has no signal masks


def run() -> int:
    """Load the CLI, then run it. Ctrl-C while it loads (asyncio, the driver, the core:
    its first ~0.1 s) ends it with status 130, as later, not with a traceback."""
    try:
        return _loaded()(process_exits=True)
    except KeyboardInterrupt:
        return 130
    finally:
        _end_quietly()


def _loaded() -> Callable[..., int]:
    """The CLI's `main`, loaded with Ctrl-C held back: raised in the middle of an import,
    Python 3.11 may wrap it in a RuntimeError (from a class's `__set_name__`)."""
    if _MASKS:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        from .cli import main
    finally:
        if _MASKS:  # a Ctrl-C held back raises KeyboardInterrupt here
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    return main


def _end_quietly() -> None:
    """A Ctrl-C from here ends the process as the signal does (130 to the shell), not
    with a traceback from the interpreter's shutdown; then what the command wrote goes
    out (nat's result may still be buffered). `main` has seen to it, if it ran."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        if _MASKS:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        finally:
            if _MASKS:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except (OSError, ValueError):
        from .cli import drop_stdout

        drop_stdout()  # the reader left: the exit's own flush must not fail again


if __name__ == "__main__":
    sys.exit(run())
