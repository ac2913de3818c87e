import sys

from .lesson.console import main

sys.exit(main())
