"""Model families, one file each, all reachable through :func:`create_model` (DESIGN.md)."""

import sys

from vislearn._discover import import_submodules
from vislearn.models.base import FeatureInfo, VisionModel, check_images
from vislearn.models.registry import create_model, create_model_from_weights, get_entry, list_models, register_model

__all__ = ["FeatureInfo", "VisionModel", "check_images", "create_model", "create_model_from_weights", "get_entry",
           "list_models", "register_model"]

import_submodules(sys.modules[__name__])
