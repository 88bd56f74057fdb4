"""The model card (`README.md`) of a keras-hub preset this package writes, so that the folder
is ready to publish on Kaggle or the Hugging Face Hub: front matter the Hub reads (library,
licence, datasets, tags), what the network is, its parameters and multiply-adds (counted on
the network itself), the published top-1 of released weights with the crop and
interpolation it was measured at, usage, and the papers to cite."""

import math

from sknet_keras.presets import get_preset
from sknet_keras.registry import family, get_entry, get_model_config

CARD_FILE = "README.md"

_SKNET = """@inproceedings{li2019selective,
  title={Selective Kernel Networks},
  author={Li, Xiang and Wang, Wenhai and Hu, Xiaolin and Yang, Jian},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={510--519},
  year={2019}
}"""
_SENET = """@inproceedings{hu2018squeeze,
  title={Squeeze-and-Excitation Networks},
  author={Hu, Jie and Shen, Li and Sun, Gang},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={7132--7141},
  year={2018}
}"""
_RESNEXT = """@inproceedings{xie2017aggregated,
  title={Aggregated Residual Transformations for Deep Neural Networks},
  author={Xie, Saining and Girshick, Ross and Doll{\\'a}r, Piotr and Tu, Zhuowen and He, Kaiming},
  booktitle={IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages={1492--1500},
  year={2017}
}"""
_SHUFFLENET = """@inproceedings{ma2018shufflenet,
  title={ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design},
  author={Ma, Ningning and Zhang, Xiangyu and Zheng, Hai-Tao and Sun, Jian},
  booktitle={European Conference on Computer Vision (ECCV)},
  pages={116--131},
  year={2018}
}"""
_LICENSES = {"Apache-2.0": "apache-2.0", "BSD-3-Clause": "bsd-3-clause"}


def _citations(config):
    attention = getattr(config, "attention", None)
    out = [_SKNET] if attention == "sk" else []
    if attention == "se" or config.family == "bn_inception":
        out.append(_SENET)
    if getattr(config, "groups", 1) > 1:
        out.append(_RESNEXT)
    if config.family == "shufflenet_v2":
        out.append(_SHUFFLENET)
    if family(config).citation:
        out.append(family(config).citation)
    return out or [_SKNET]


def _release(config, weights):
    """The release `weights` names: "imagenet" (the model's default) or "architecture.tag"."""
    if weights == "imagenet":
        return get_preset(config.name)
    return get_preset(weights) if str(weights).split(".", 1)[0] == config.name else None


def card_figures(model, classes, image_size):
    """{figure: value} the card states, counted on the network built at `image_size`."""
    from sknet_keras.applications import build_model
    from sknet_keras.complexity import count_macs

    network = build_model(get_model_config(model), weights=None, classes=classes,
                          input_shape=(image_size, image_size, 3))
    # Trainable ones, as papers and timm count them (BatchNorm's moving statistics are not).
    parameters = sum(int(math.prod(w.shape)) for w in network.trainable_weights)
    return {"parameters": parameters, "macs": int(count_macs(network)),
            "classes": int(classes)}


def model_card(model, figures, image_size, normalization, weights="imagenet", dataset=None,
               handle="./preset"):
    """The card's text. `weights`: "imagenet" (the model's default release, or
    "architecture.tag"), else what the weights are (a file, a run); `dataset` names the
    training data where they are not a release."""
    config = get_model_config(model)
    entry = get_entry(config.name)
    release = _release(config, weights)
    licence = "other"
    if release is not None:
        licence = _LICENSES.get(release.license.split(" ")[0], "other")
    datasets = ["imagenet-1k"] if release is not None else ([dataset] if dataset else [])
    tags = ["image-classification", "keras", "keras-hub", "sknet_keras", config.family]
    lines = ["---", "library_name: keras-hub", f"license: {licence}"]
    if licence == "other" and release is not None and release.page:
        lines += ["license_name: see-source", f"license_link: {release.page}"]
    if datasets:
        lines += ["datasets:"] + [f"- {d}" for d in datasets]
    lines += ["tags:"] + [f"- {t}" for t in tags]
    lines += ["pipeline_tag: image-classification", "---", "",
              f"# {config.name}", "", f"{entry.description}.", "",
              "| | |", "|---|---|",
              f"| parameters (trainable) | {figures['parameters']:,} |",
              f"| multiply-adds at {image_size}×{image_size} | "
              f"{figures['macs'] / 1e9:.2f} G ({figures['macs']:,}) |",
              f"| classes | {figures['classes']} |",
              f"| input | RGB images in [0, 255], resized to {image_size}×{image_size}; "
              f"`{normalization}` normalization in the preprocessor |"]
    if release is not None:
        lines += [f"| weights | {release.source} release `{release.file_name}` "
                  f"({release.license}) |"]
        if release.top1 is not None:
            lines += [f"| ImageNet top-1 (published) | {release.top1:.2f} % at "
                      f"{release.crop_fraction:g} centre crop, {release.interpolation} "
                      f"resize ({release.top1_source}) |"]
    else:
        lines += [f"| weights | {weights}"
                  + (f", trained on {dataset}" if dataset else "") + " |"]
    lines += ["", "## Usage", "", "```python", "import keras_hub",
              "import sknet_keras.hub  # registers the classes with Keras", "",
              f'classifier = keras_hub.models.ImageClassifier.from_preset("{handle}")',
              "logits = classifier.predict(images)  # RGB in [0, 255], any size", "```", "",
              "Written by sknet_keras (`python -m sknet_keras.hub`), which loaded it back and "
              "compared its outputs with the package's network before writing it.",
              "", "## Citation", "", "```bibtex", *"\n\n".join(_citations(config)).split("\n"),
              "```", ""]
    return "\n".join(lines)


def upload_preset(uri, preset):
    """`keras_hub.upload_preset(uri, preset)`, keeping the preset's model card.

    To a Hugging Face repository without a README, keras-hub uploads a generic card of its
    own, written over the folder's README.md and deleted after: the card would be lost there
    and here. So the card goes first (the repository created if need be), then the rest."""
    import os

    import keras_hub

    card = os.path.join(os.fspath(preset), CARD_FILE)
    if str(uri).startswith("hf://") and os.path.isfile(card):
        from sknet_keras.extras import require

        hf = require("huggingface_hub", "uploading to the Hugging Face Hub")
        repo = hf.create_repo(repo_id=str(uri).removeprefix("hf://"), exist_ok=True)
        hf.upload_file(path_or_fileobj=card, path_in_repo=CARD_FILE, repo_id=repo.repo_id)
    keras_hub.upload_preset(uri, preset)
