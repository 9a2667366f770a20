"""``python -m minigrpo``: the same as the ``minigrpo`` command, and what ``accelerate launch -m minigrpo train …``
starts on each process."""
import sys

from minigrpo.cli import main

sys.exit(main())
