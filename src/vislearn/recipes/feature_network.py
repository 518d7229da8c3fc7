"""The fallback feature network ``"shapes32"`` for distribution distances, trained by the ``classify`` recipe.

When no Inception-v3 or CLIP weights are at hand (nothing downloads), FID/CMMD-style distances in
our reproductions use a small classifier trained on the embedded data by our own recipe:
``vislearn train classify --set model=small_convnet dataset=shapes image_size=32 ...`` (the settings of
:data:`SHAPES32`). The trained weights are cached under :func:`vislearn.metrics.features.cache_dir`
as ``shapes32-<hash of the config>.safetensors`` with the config and the test accuracy beside it
(``.json``), so later runs load it instead of retraining. Its features (the 128-d global average pool
of the last stage) describe colours, shapes and textures of small images; distances from it are not
FID or CMMD and are comparable only with each other (the extractor's ``record`` says so).

Registered with :func:`vislearn.metrics.features.register_feature_network` when ``vislearn.recipes``
is imported, so ``feature_extractor("shapes32")`` works from any code that has imported the recipes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vislearn.metrics.features import FeatureExtractor, cache_dir, pooled_features, register_feature_network

__all__ = ["SHAPES32", "shapes32_extractor"]

# the classify recipe's settings for the fallback network (fixed: a change makes a new cache entry)
SHAPES32: dict[str, Any] = {"model": "small_convnet", "dataset": "shapes", "image_size": 32, "steps": 300,
                            "batch_size": 64, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9,
                            "schedule": "cosine", "weight_decay": 5e-4, "seed": 0, "log_every": 0}


def shapes32_extractor(cache: str | Path | None = None, steps: int | None = None) -> FeatureExtractor:
    """The ``shapes32`` network: loaded from the cache, or trained by ``classify`` (about 10 s on a CPU) and cached.

    Args:
        cache: the cache folder (default :func:`~vislearn.metrics.features.cache_dir`).
        steps: override the training steps (tests); part of the cache key.
    """
    from vislearn.io import atomic_write_json, save_weights
    from vislearn.models.registry import create_model_from_weights
    from vislearn.recipes import run

    overrides = dict(SHAPES32, **({"steps": int(steps)} if steps is not None else {}))
    key = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache) if cache is not None else cache_dir()
    weights, meta = folder / f"shapes32-{key}.safetensors", folder / f"shapes32-{key}.json"
    if weights.is_file() and meta.is_file():
        model = create_model_from_weights(weights).eval()
        info = json.loads(meta.read_text())
        cached = True
    else:
        result = run("classify", "quick", overrides, progress=False)
        model = result.task.model.eval()
        info = {"recipe": "classify", "config": overrides, "test_top1": float(result.final_metrics["top1"])}
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(model, weights)
        atomic_write_json(meta, info)
        cached = False
    record = {"network": "shapes32", "source": "trained by vislearn's classify recipe on embedded shapes (32 px)",
              "path": str(weights), "loaded_from_cache": cached, **info,
              "features": "128-d global average pool of small_convnet's last stage",
              "note": "not Inception or CLIP: distances are not FID/CMMD, compare only with each other"}
    return FeatureExtractor(pooled_features(model, side=32), record)


register_feature_network("shapes32", shapes32_extractor)
