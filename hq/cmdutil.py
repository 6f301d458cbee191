"""What every ``bodycam-hq`` command module shares: the one-line failure, who is acting (for the
audit log), and help texts used by more than one command."""

from __future__ import annotations

import getpass
import sys

STORE_URL_HELP = ("where evidence is kept: s3://BUCKET?endpoint=URL&retention_days=N&... (an S3 bucket with "
                  "Object Lock; docs/deployment-hq.md, 'Object store'); default: files in DATA_DIR")


def fail(command: str, message: str, code: int = 1) -> int:
    """Print ``bodycam-hq COMMAND: message`` on stderr; return ``code`` (1 refused, 2 bad usage)."""
    print(f"bodycam-hq {command}: {message}", file=sys.stderr)
    return code


def actor() -> str:
    """The operating-system user running the command, as the audit log's actor."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
