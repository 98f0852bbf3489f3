import os
import sys

from .cli import main

try:
    sys.exit(main())
except BrokenPipeError:
    # The reader of our output closed the pipe (`python -m gru ... | head`): no traceback.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
