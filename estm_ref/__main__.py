import sys

from estm_ref.cli.main import main

sys.exit(main())
