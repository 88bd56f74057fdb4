"""Top-1 / top-5 of a training run's newest readable checkpoint, or of a weights file, at
one or more resolutions (the function behind `python -m sknet_keras.trainers.evaluate`)."""

from sknet_keras import cli


def evaluate(config, image_sizes, weights=None, model_dir=None, batch_size=64,
             precision="float32"):
    """{image size: {"top1", "top5", "examples"}} of a run's checkpoint or a weights file.

    `config` is an `ExperimentConfig` (model, data); exactly one of `weights`, `model_dir`.
    """
    import keras
    import tensorflow as tf

    from sknet_keras.weights.files import load_weights
    from sknet_keras.trainers import datasets
    from sknet_keras.trainers.checkpoints import restore_newest
    from sknet_keras.trainers.loop import latest_checkpoint, run_evaluation
    from sknet_keras.trainers.task import ClassificationTask

    if (weights is None) == (model_dir is None):
        raise cli.UsageError("give exactly one of --model_dir and --weights")
    spec = datasets.load_spec(config.data.dataset, config.data.data_dir)
    checkpoint = None
    if model_dir:
        checkpoint = latest_checkpoint(model_dir)
        if not checkpoint:
            raise cli.UsageError(f"no checkpoint in {model_dir}/checkpoints")
    strategy = tf.distribute.get_strategy()
    results = {}
    for size in image_sizes:
        run = config.override(image_size=size, batch_size=batch_size, precision=precision,
                              weights=None, sync_bn=False, rematerialize=False)
        if run.model.num_classes is None:
            run.model.num_classes = spec.num_classes
        task = ClassificationTask(run, spec)
        model = task.build_model()
        if checkpoint:  # the newest readable one: damaged ones are named and skipped
            checkpoint = restore_newest(tf.train.Checkpoint(model=model), model_dir,
                                        log=print if size == image_sizes[0] else _quiet)
        elif weights == "imagenet":
            from sknet_keras.applications.pretrained import load_imagenet_weights

            load_imagenet_weights(model, run.model.name)
        else:
            load_weights(model, weights)
        top1, top5, n = run_evaluation(strategy, task, model)
        results[size] = {"top1": top1, "top5": top5, "examples": n}
        keras.backend.clear_session()
    return results


def _quiet(*args):
    del args
