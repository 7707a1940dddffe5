"""`python -m f5voice`: the command-line client."""

import sys

from f5voice.cli import main

sys.exit(main())
