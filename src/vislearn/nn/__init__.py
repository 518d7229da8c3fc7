"""Layers: the paper's batch normalisation (reference), population statistics, BN folding, Conv-BN-act."""

import sys

from vislearn._discover import import_submodules

import_submodules(sys.modules[__name__], export=True)
