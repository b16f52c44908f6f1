"""Entry point of the worker container: ``python -m stream.worker_main [learner]``.

Same as ``synthguard worker`` (or, with ``learner``, ``synthguard learner``) but
without the full CLI, whose offline commands (training, evaluation, export) pull in
torch: the worker image installs only ``requirements-worker.txt``. Settings come
from ``SYNTHGUARD_*`` only.
"""

from __future__ import annotations

import logging
import os
import sys

from pydantic import ValidationError

from stream.app import run_worker
from stream.errors import StreamError
from stream.settings import StreamSettings

logger = logging.getLogger("stream.worker_main")


def main(argv: list[str] | None = None) -> int:
    """Read the settings, run the worker (or learner) until SIGTERM; the exit code."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=os.environ.get("SYNTHGUARD_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args == ["learner"]:
            from stream.runners.learner_runner import run_learner

            return run_learner(StreamSettings())
        return run_worker(StreamSettings())
    except ValidationError as exc:
        logger.error("invalid SYNTHGUARD_* settings:\n%s", exc)  # noqa: TRY400 - message is the point
        return 2
    except StreamError as exc:
        logger.error("%s: %s", type(exc).__name__, exc)  # noqa: TRY400 - message is the point
        return 2


if __name__ == "__main__":
    sys.exit(main())
