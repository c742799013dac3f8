import sys

from thawllm.cli import main

sys.exit(main())
