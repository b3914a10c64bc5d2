"""Where the tests find the real datasets (MNIST, Omniglot, 20 Newsgroups), when they are there:
``$ABLO_SHARED_DATA``, else ``../shared/data`` beside the repository. Tests that need them skip,
saying so, when the folder is absent."""

import os
from pathlib import Path

SHARED_DATA = Path(os.environ.get("ABLO_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
