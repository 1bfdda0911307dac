import sys

from estm_ref.cli import main

sys.exit(main())
