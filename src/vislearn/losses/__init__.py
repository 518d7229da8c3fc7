"""vislearn.losses: one module per topic; every name in a module's ``__all__`` is re-exported here."""

import sys

from vislearn._discover import import_submodules

import_submodules(sys.modules[__name__], export=True)
