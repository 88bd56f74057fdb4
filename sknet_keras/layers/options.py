"""Build-time options for the layers a model builder creates, as a scope.

A training run decides how layers run (synchronized BN across replicas, rematerialized SK
units, the dtype policy) before the model exists; builders pass no such arguments down.
Inside `build_options(...)` the layers read these as their defaults when constructed, so
they are set at construction (and serialized with the layer), not flipped afterwards.
"""

import contextlib
import dataclasses

import keras


@dataclasses.dataclass
class _Options:
    sync_bn: bool = False
    rematerialize: bool = False


_current = _Options()


def current():
    return _current


@contextlib.contextmanager
def build_options(sync_bn=None, rematerialize=None, dtype_policy=None):
    """Layers built inside take these defaults; everything is restored on exit."""
    global _current
    previous, previous_policy = _current, keras.config.dtype_policy()
    _current = dataclasses.replace(
        _current, **{k: bool(v) for k, v in (("sync_bn", sync_bn),
                                               ("rematerialize", rematerialize))
                     if v is not None})
    if dtype_policy is not None:
        keras.config.set_dtype_policy(dtype_policy)
    try:
        yield
    finally:
        _current = previous
        keras.config.set_dtype_policy(previous_policy)
