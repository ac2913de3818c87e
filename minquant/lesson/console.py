"""The ``minquant`` console script's first instructions: take Ctrl-C before anything heavy loads.

``minquant.lesson.cli`` needs NumPy, Numba and (for most commands) torch — about half a second of imports
before its ``main`` can install the interrupt handler that cleans up and exits 130. A Ctrl-C in that
half-second would print a KeyboardInterrupt traceback. This module installs a minimal handler first (nothing
has been written yet, so there is nothing to clean up: one line, exit status 130), then hands over to
:func:`minquant.lesson.cli.main`, which replaces it with its own."""
import os
import signal
import sys


def _interrupted_while_loading(signum, frame):
    sys.stderr.write("minquant: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def main(argv=None) -> int:
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    from .cli import main as cli_main
    return cli_main(argv)
