import sys

from .lesson.cli import main

sys.exit(main())
