"""PID 1 of a lab's PID namespace: starts labd, reaps orphans, and exits when labd exits.

When this process ends, the kernel kills every other process of the namespace, so no container
outlives its lab, even when labd is killed with SIGKILL. Kept free of imports beyond the standard
library's basics so it starts in milliseconds.
"""

import os
import signal
import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    child = os.fork()
    if child == 0:
        os.execv(argv[0], argv)

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
