"""The model card of a keras-hub preset (`sknet_keras.hub.model_card`): its front matter parses,
its figures equal an independent count of the network (tests/resnet_counter.py) and the
weights' release record, and uploading keeps it."""

import os
import re

import pytest

pytest.importorskip("keras_hub", reason="keras-hub is not installed (pip install -e '.[hub]')")
yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")

from resnet_counter import count  # noqa: E402

from sknet_keras.hub.model_card import card_figures, model_card  # noqa: E402
from sknet_keras.presets import get_preset  # noqa: E402
from sknet_keras.registry import get_model_config  # noqa: E402


def _parse(card):
    match = re.match(r"---\n(.*?)\n---\n(.*)", card, re.S)
    assert match, card[:200]
    return yaml.safe_load(match.group(1)), match.group(2)


def _figure(body, label):
    row = next(line for line in body.splitlines() if line.startswith(f"| {label}"))
    return row.split("|")[2].strip()


@pytest.mark.parametrize("model,licence", [
    ("sknet50", "apache-2.0"),                                  # timm's release
    pytest.param("seresnet50", "apache-2.0", marks=pytest.mark.large),  # SENet's Caffe release
    pytest.param("sknet50_caffe", "other", marks=pytest.mark.large),    # SKNet's own release
])
def test_the_card_states_the_networks_counts_and_its_release(model, licence):
    config = get_model_config(model)
    figures = card_figures(model, 1000, 224)
    card = model_card(model, figures, 224, "torch", weights="imagenet")
    front, body = _parse(card)
    assert front["library_name"] == "keras-hub" and front["license"] == licence
    assert front["datasets"] == ["imagenet-1k"] and "image-classification" in front["tags"]
    if licence == "other":
        assert front["license_link"] == get_preset(model).page
    params, macs = count(config, 224, 1000)
    assert _figure(body, "parameters") == f"{params:,}"
    assert f"({macs:,})" in _figure(body, "multiply-adds at 224")
    release = get_preset(model)
    top1 = _figure(body, "ImageNet top-1")
    assert top1.startswith(f"{release.top1:.2f} % at {release.crop_fraction:g} centre crop, "
                           f"{release.interpolation} resize")
    assert "Selective Kernel Networks" in body if config.attention == "sk" else \
        "Squeeze-and-Excitation Networks" in body


def test_a_run_card_names_its_dataset_and_claims_no_release():
    figures = card_figures("mini_sknet", 10, 32)
    card = model_card("mini_sknet", figures, 32, "caffe", weights="a training run's final "
                      "weights", dataset="digits")
    front, body = _parse(card)
    assert front["license"] == "other" and front["datasets"] == ["digits"]
    assert "top-1" not in body and _figure(body, "classes") == "10"
    params, _ = count(get_model_config("mini_sknet"), 32, 10)
    assert _figure(body, "parameters") == f"{params:,}"


def test_uploading_to_the_hugging_face_hub_keeps_the_card(tmp_path, monkeypatch):
    """keras-hub writes its own card over a README.md when the repository has none and deletes
    it after; `upload_preset` sends the card first. (The Hub is faked at huggingface_hub's
    functions: there is no network here; keras-hub's own upload_preset runs.)"""
    import huggingface_hub

    from sknet_keras import hub

    folder = str(tmp_path / "preset")
    hub.image_classifier("mini_sknet", classes=10, image_size=32).save_to_preset(folder)
    card = model_card("mini_sknet", card_figures("mini_sknet", 10, 32), 32, "torch",
                      weights="random")
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write(card)
    remote = {}

    class Repo:
        repo_id = "you/mini"

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, exist_ok: Repo)
    monkeypatch.setattr(huggingface_hub, "file_exists",
                        lambda repo_id, filename: filename in remote)

    def upload_file(path_or_fileobj, path_in_repo, repo_id):
        with open(path_or_fileobj) as f:
            remote[path_in_repo] = f.read()

    def upload_folder(repo_id, folder_path):
        for name in os.listdir(folder_path):
            if name.endswith(".md"):
                with open(os.path.join(folder_path, name)) as f:
                    remote[name] = f.read()
            else:
                remote[name] = "<bytes>"

    monkeypatch.setattr(huggingface_hub, "upload_file", upload_file)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    hub.upload_preset("hf://you/mini", folder)
    assert remote["README.md"] == card and "config.json" in remote
    with open(os.path.join(folder, "README.md")) as f:
        assert f.read() == card
