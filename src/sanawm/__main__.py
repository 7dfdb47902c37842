import sys

from sanawm.cli import main

sys.exit(main())
