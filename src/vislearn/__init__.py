"""vislearn: nine computer-vision papers as one coherent, fast, tested PyTorch library.

Public entry points: :func:`vislearn.models.create_model`, the losses in :mod:`vislearn.losses`,
the metrics in :mod:`vislearn.metrics`, the training engine in :mod:`vislearn.train` and the
``vislearn`` command line (:mod:`vislearn.cli`).
"""

__version__ = "0.1.0"
