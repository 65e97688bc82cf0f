"""``python -m server``: the same as ``tensorflow_model_server``."""

import sys

from server.cli import tensorflow_model_server_main

sys.exit(tensorflow_model_server_main())
