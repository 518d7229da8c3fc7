"""The inference fast path: ``optimize(model)`` → an eval-mode model that is cheaper to run.

Independent steps, each optional:

1. **Fold BatchNorm** into the preceding conv/linear layer (:func:`vislearn.nn.fold_batchnorm`; at
   inference BN is a fixed affine map, Ioffe & Szegedy 2015, Alg. 2), removing a memory-bound pass
   over every activation map.
2. **channels_last** weights and inputs: oneDNN's (CPU) and cuDNN's (GPU) fastest convolution layout.
3. **Reduced precision**: bf16 autocast on CPUs with native bf16 instructions (AVX-512-BF16 or
   AMX-BF16) and on CUDA devices that support it, else fp16 on CUDA; plain fp32 elsewhere. Or
   ``precision="int8"``: post-training static quantization calibrated on the user's batches
   (:mod:`vislearn.inference.int8`, torchao's PT2E flow; CPU, needs the ``int8`` extra). Outputs are
   returned in float32 so callers never see the reduced dtype.
4. **compile**: ``torch.compile`` with inductor, weights frozen into the graph on CPU
   (:mod:`vislearn.inference.compiling`).

:func:`agreement` measures how far a fast model's logits are from the fp32 model's (max relative
error, cosine similarity, top-1 agreement and, with labels, top-1 accuracy of both).

Example::

    from vislearn.models import create_model
    from vislearn.inference import optimize

    fast = optimize(create_model("bn_inception"))      # eval mode, folded, channels_last, bf16 if fast
    logits = fast(images)                              # images: float N×3×H×W in [0, 1]; logits float32
    feats = fast.forward_features(images)              # backbone interface still there
    fast.normalization, fast.feature_info              # forwarded to the wrapped model
    compiled = optimize(model, compile=True)           # first call compiles (slow), later calls are fast
    q = optimize(model, precision="int8", calibration=[images[:32], images[32:64]])

The result is for inference only (``fast.train()`` raises). The input model is not modified.
"""

from vislearn.inference.agreement import agreement
from vislearn.inference.api import optimize
from vislearn.inference.model import InferenceModel
from vislearn.inference.precision import cpu_supports_bf16, cpu_supports_int8, resolve_precision

__all__ = ["optimize", "InferenceModel", "agreement", "cpu_supports_bf16", "cpu_supports_int8",
           "resolve_precision"]
