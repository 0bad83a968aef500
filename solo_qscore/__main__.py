import sys

from solo_qscore.cli import main

sys.exit(main())
