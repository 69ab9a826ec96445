"""`python -m vidstyle` and the `vidstyle` command.

Nothing slow is imported before the command line takes charge of Ctrl-C: a Ctrl-C while Python is still loading
it ends with one line and exit code 130, like one at any later moment.
"""

from __future__ import annotations

import atexit
import os
import sys

INTERRUPTED = 130


def run() -> int:
    try:
        from vidstyle.cli import main

        code = main(restore_signals=False)
    except KeyboardInterrupt:  # before main() took charge of Ctrl-C
        print("vidstyle: interrupted", file=sys.stderr)
        code = INTERRUPTED
    if code == INTERRUPTED:
        # A Ctrl-C that arrives while some extension module runs Python code during its import can leave CPython
        # marked as stopped by an unhandled KeyboardInterrupt; it then kills itself with SIGINT on the way out
        # whatever the exit code. Leave with the code the message promised, after what a normal exit runs: the
        # exit handlers, where multiprocessing releases the server's named semaphores (else its resource tracker
        # warns of them as leaked).
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(run())
