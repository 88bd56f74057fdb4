"""The training precision that fits the hardware, and why.

- bfloat16 where it is native: a TPU, or a CPU with `avx512_bf16` / `amx_bf16` running
  TensorFlow's oneDNN kernels;
- float16 with loss scaling on a GPU;
- float32 everywhere else. A CPU without native bfloat16 has no oneDNN bf16 kernels and no
  Eigen bf16 convolution gradients, so `bfloat16` is refused there in one line.
"""

from sknet_keras.layers.accel import kernel_support


def hardware(strategy_name):
    """"tpu", "gpu" or "cpu": where the run computes."""
    if strategy_name == "tpu":
        return "tpu"
    return "gpu" if kernel_support.gpu_available() else "cpu"


def _why_no_native_bfloat16():
    if not kernel_support.cpu_native_bfloat16():
        return "this CPU has no native bfloat16 (no avx512_bf16 / amx_bf16 flag)"
    return ("TensorFlow's oneDNN kernels are off (TF_ENABLE_ONEDNN_OPTS=0), and only they "
            "compute bfloat16 natively")


def choose(requested, strategy_name, source="as requested"):
    """(precision, reason) for `requested` (None: the hardware's default); `source` says where
    a requested precision came from.

    Raises ValueError, in one line, for a precision this hardware cannot train in.
    """
    where = hardware(strategy_name)
    kernels = kernel_support.describe()
    native_bf16 = kernel_support.cpu_native_bfloat16() and kernel_support.onednn_enabled()
    if requested is None:
        if where == "tpu":
            return "bfloat16", "default on a TPU"
        if where == "gpu":
            return "float16", f"default on a GPU, with loss scaling ({kernels})"
        if native_bf16:
            return "bfloat16", f"default: this CPU computes bfloat16 natively ({kernels})"
        return "float32", f"default: {_why_no_native_bfloat16()} ({kernels})"
    if requested == "bfloat16" and where == "cpu" and not native_bf16:
        raise ValueError(f"bfloat16: {_why_no_native_bfloat16()}, so TensorFlow has no "
                         f"bfloat16 kernels to train with here ({kernels}); use float32")
    return requested, f"{source} ({kernels})"
