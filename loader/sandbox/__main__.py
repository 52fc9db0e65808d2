"""``python -m loader.sandbox ...``: run the sandbox server in the foreground."""

import sys

from loader.sandbox.cli import main

sys.exit(main())
