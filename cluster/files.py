"""[plumbing] Writing a file so that a crash never leaves it half-written."""

import os
from pathlib import Path


def write_atomically(path: Path, text: str) -> None:
    """Write text to a temporary file beside path, then rename it over path."""
    tmp = path.with_name(path.name + ".tmp")  # same directory: os.replace is a rename
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
