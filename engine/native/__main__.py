import sys

from engine.native import main

sys.exit(main())
