"""Installs the JavaScript client's test dependencies (`npm ci`) before the
suite runs, when npm is there. Without npm the JavaScript tests skip on a
laptop; under CI=true a missing npm fails the run, like any missing part."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

JS = Path(__file__).resolve().parent.parent / "clients" / "js"


def main() -> int:
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            print("npm is required when CI=true (the JavaScript client's tests need it)", file=sys.stderr)
            return 1
        print("npm not found: the JavaScript client's tests will be skipped", file=sys.stderr)
        return 0
    command = [npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund", "--loglevel=error"]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
