import sys

from hub.runtime.cli import main

sys.exit(main())
