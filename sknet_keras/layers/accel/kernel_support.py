"""Which kernels this process has: oneDNN or Eigen on the CPU, a GPU, native bfloat16.

TensorFlow's CPU kernels come in two sets, fixed when TensorFlow is imported:
- oneDNN (`TF_ENABLE_ONEDNN_OPTS=1`; TensorFlow's default on x86 Linux CPUs with VNNI,
  bfloat16 or AMX instructions): grouped and dilated convolutions with their gradients;
  bfloat16 kernels only where the CPU has native bfloat16 (`avx512_bf16` / `amx_bf16`).
- Eigen (the default elsewhere, or `TF_ENABLE_ONEDNN_OPTS=0`): no gradient of a grouped or
  dilated convolution, and Grappler's fused conv + BN kernel refuses groups. The x86 builds
  still register the oneDNN kernels, which the layers then call directly where a graph stays
  in this process (`onednn_kernels`).
The layers choose their formulation from these facts when a function is traced.
"""

import functools
import os

from sknet_keras import internals

cpu_flags = internals.cpu_flags


@functools.lru_cache(maxsize=None)
def onednn_enabled():
    """True when TensorFlow runs its oneDNN CPU kernels in this process."""
    return internals.onednn_enabled()


@functools.lru_cache(maxsize=None)
def jax_on_cpu():
    """JAX (the Keras backend) computes on the CPU, where XLA's grouped convs are slow."""
    import jax

    return jax.default_backend() == "cpu"


def gpu_available():
    """A GPU is visible (physical devices: asking does not initialize TensorFlow's runtime,
    which would fix the logical-device split before a strategy can make it)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def cpu_native_bfloat16():
    """The CPU computes bfloat16 natively (oneDNN has bf16 kernels only there), and
    `ONEDNN_MAX_CPU_ISA` does not cap oneDNN below those instructions (e.g. `AVX2`)."""
    if not {"avx512_bf16", "amx_bf16"} & cpu_flags():
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return cap in ("ALL", "DEFAULT", "") or any(t in cap for t in ("BF16", "AMX", "AVX10"))


def cpu_has_avx512():
    return "avx512f" in cpu_flags()


def describe():
    """One line: the kernels in use, for logs and the trainer's first line."""
    import tensorflow as tf

    if gpu_available():
        return f"{len(tf.config.list_physical_devices('GPU'))} GPU(s)"
    isa = "AVX-512" if cpu_has_avx512() else ("AVX2" if "avx2" in cpu_flags() else "CPU")
    bf16 = ", native bf16" if cpu_native_bfloat16() else ""
    return f"{isa} CPU{bf16}, {'oneDNN' if onednn_enabled() else 'Eigen'} kernels"
