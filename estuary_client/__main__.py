import sys

from estuary_client.cli import main

sys.exit(main())
