"""TensorFlow's caching (BFC) allocator for CPU tensors where its Eigen kernels are in use.

    import sknet_keras
    sknet_keras.use_caching_allocator()   # before TensorFlow runs its first op

The `python -m sknet_keras...` commands call it for their own process (`sknet_keras.cli`);
importing the package never does: the allocator is a process-wide choice, the user's to make.

With its oneDNN kernels on, TensorFlow takes CPU tensors from a caching pool (its
`MklCPUAllocator`). With them off, which is its default on CPUs without AVX-512, it takes every
tensor from `malloc`. A large tensor is then fresh memory from the OS, and its first touch
costs page faults on every step. TensorFlow's BFC allocator (`TF_CPU_ALLOCATOR_USE_BFC`)
reuses freed memory instead. On the Eigen kernels with oneDNN capped at AVX2 (batch 16, 224²,
docs/performance.md), SKNet-50 inferred 1.08× and trained 1.15× faster, with a lower peak
RSS; one training BatchNorm (16×56×56×256, forward and backward) took half the time.

Written by hand because TensorFlow chooses its CPU allocator from environment variables, and
reads them only once, when it creates its CPU device (at the first op). So
`use_caching_allocator` sets them only under these conditions:
- the user has not set them;
- the Keras backend is TensorFlow;
- the oneDNN kernels are off;
- no op has run yet.
Otherwise the allocator stays as TensorFlow chose it. The pool's limit is the machine's
memory (TensorFlow's own default limit is 64 GiB), so that no allocation that `malloc` would
serve is refused; where the memory cannot be read, nothing is chosen. Like oneDNN's pool, it
keeps a process's peak for reuse rather than returning it to the OS
(`TF_CPU_ALLOCATOR_USE_BFC=false` keeps `malloc`).

Child processes inherit the variables. `MARKER` records that this module set them, so that a
child that calls this function while running the oneDNN kernels, which have their own pool
(a command started under `TF_ENABLE_ONEDNN_OPTS=1` by an Eigen one), drops them again.
"""

import os

from sknet_keras import internals

USE_BFC = "TF_CPU_ALLOCATOR_USE_BFC"
LIMIT_MB = "TF_CPU_BFC_MEM_LIMIT_IN_MB"
MARKER = "SKNET_KERAS_CHOSE_CPU_ALLOCATOR"


def _physical_memory_mb():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


class TooLateWarning(RuntimeWarning):
    """`use_caching_allocator()` was called after TensorFlow ran an op: it changed nothing."""


def use_caching_allocator(warn_if_late=False):
    """Choose TensorFlow's BFC allocator for CPU tensors where it is not chosen yet (see the
    module doc); returns whether this call chose it. `warn_if_late`: a `TooLateWarning` where
    TensorFlow has already run an op (the user's explicit call; the other cases in which
    nothing is chosen are the user's or TensorFlow's own choice)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    if internals.runtime_started():
        if warn_if_late and not internals.onednn_enabled() and USE_BFC not in os.environ:
            import warnings

            warnings.warn("sknet_keras.use_caching_allocator(): TensorFlow has already run an "
                          "op, so its CPU allocator is fixed; call it before anything runs "
                          "(right after the imports)", TooLateWarning, stacklevel=3)
        return False
    chosen_by_a_parent = os.environ.get(MARKER, "").split(",")
    if internals.onednn_enabled():
        if USE_BFC in chosen_by_a_parent:  # oneDNN has its own pool
            for name in chosen_by_a_parent + [MARKER]:
                os.environ.pop(name, None)
        return False
    if USE_BFC in os.environ:
        return False
    memory_mb = _physical_memory_mb()
    if not memory_mb:
        return False
    chosen = [USE_BFC] + ([] if LIMIT_MB in os.environ else [LIMIT_MB])
    os.environ[USE_BFC] = "true"
    os.environ.setdefault(LIMIT_MB, str(memory_mb))
    os.environ[MARKER] = ",".join(chosen)  # for child processes (module doc)
    return True
