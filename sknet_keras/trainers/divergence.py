"""Stopping a run that diverged, before its checkpoint: the last checkpoint stays one of
finite weights, and the message says which steps and what to change."""

import keras
import numpy as np

from sknet_keras.trainers.checkpoints import step_of

ADVICE = "lower --learning_rate, or raise --batch_size"


def weights_finite(model):
    return all(np.isfinite(keras.ops.convert_to_numpy(v)).all()
               for v in model.trainable_variables)


def check(loss, model, step, steps, kept):
    """FloatingPointError if the loop's mean `loss` or the weights are not finite after the
    loop of `steps` steps that ended at `step`; `kept`: the last checkpoint (or None)."""
    diverged = (f"training loss is {loss}" if not np.isfinite(loss) else
                None if weights_finite(model) else "the weights are not finite")
    if not diverged:
        return
    first = step - steps + 1
    raise FloatingPointError(
        f"{diverged} at step {first if steps == 1 else f'{first}-{step}'}: the run diverged "
        "and stopped; " + (f"{kept} (step {step_of(kept)}) is kept, untouched" if kept
                           else "no checkpoint was written") + f" ({ADVICE})")
