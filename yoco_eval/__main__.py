import sys

from yoco_eval.cli import main

sys.exit(main())
