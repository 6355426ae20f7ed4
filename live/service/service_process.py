"""The service as a child process (the soak starts it this way; ``tradebot service --config`` is the same call):

    python -m tradebot.live.service.service_process CONFIG.yaml

Exit codes: 0 stopped (SIGTERM / Ctrl-C); 2 bad input (one ``error:`` line).
"""

from __future__ import annotations

import sys

from tradebot.core.errors import UserInputError


def main(argv: list[str]) -> int:
    from tradebot.live.service.service import run_service

    try:
        return run_service(argv[0])
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
