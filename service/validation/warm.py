"""Build the validator's on-disk caches ahead of use: ``python -m service.validation.warm [DIR]``.

The Docker image runs it at build time, as root, so the service's non-root user only ever reads
``DIR/cache/`` (the converted base definitions and the profiles' snapshots). Both are keyed by the
base jar and ``profiles/``, which the image fixes, so a later load finds them current and writes
nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from service.validation.definitions import PROFILES_DIR
from service.validation.fetch import DEFAULT_DIR
from service.validation.validator import Validator


def warm(base_dir: Path = DEFAULT_DIR, profiles_dir: Path = PROFILES_DIR) -> list[Path]:
    """Load the validator once (which writes any missing cache file); the cache files, sorted."""
    Validator.load(profiles_dir, base_dir)
    return sorted((base_dir / "cache").iterdir())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    base_dir = Path(args[0]) if args else DEFAULT_DIR
    for path in warm(base_dir):
        print(f"validator cache: {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
