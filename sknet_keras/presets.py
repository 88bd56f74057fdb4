"""Pretrained weights: where each registry model's `weights="imagenet"` comes from.

Keyed by `architecture.tag`, as timm's `default_cfgs` are: the registry name, then a tag
saying which weights (timm's own tag for its releases, `caffe_in1k` for the Caffe releases,
`tv_in1k` for torchvision's), so that several weights of one architecture can coexist.
The first entry of an architecture is the one `weights="imagenet"` loads. Architectures
know nothing of this. Every source is the publisher's
own file at a direct URL, with the hash its publisher states: the full sha256 / sha384 listed
by OpenVINO's Open Model Zoo for its mirrors of the SENet release, or the sha256 prefix that
timm's and torchvision's release file names carry (torch.hub's `check_hash` convention).
Evaluation settings (crop, interpolation) and accuracies are the publisher's too.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download"
OMZ = "https://storage.openvinotoolkit.org/repositories/open_model_zoo/public/2021.4"
SENET_PAGE = "https://github.com/hujie-frank/SENet#trained-models"
SKNET_PAGE = "https://github.com/implus/SKNet"
TIMM_LICENSE = "Apache-2.0 (timm: https://github.com/huggingface/pytorch-image-models)"
SENET_LICENSE = "Apache-2.0 (https://github.com/hujie-frank/SENet)"
TORCHVISION_LICENSE = "BSD-3-Clause (https://github.com/pytorch/vision)"
TORCHVISION = "https://download.pytorch.org/models"
MIB = 1 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """One model's ImageNet weights.

    source: the converter that reads the file ("timm": safetensors or a PyTorch pickle with
    timm's key names; "caffe": a caffemodel; "torchvision"). url None: no direct download,
    the file must be fetched by hand from `page`. sha256 / sha384: the published hash, in
    full or as the prefix a release file name carries. also_accepted: other file names that
    hold the same weights when placed by hand, with the URL to fetch each from.
    """

    source: str
    file_name: str
    url: Optional[str] = None
    sha256: Optional[str] = None
    sha384: Optional[str] = None
    size: Optional[int] = None  # bytes, where the publisher states it
    size_tolerance: int = 0  # bytes either side of `size` when the publisher rounds it
    preprocessing: str = "torch"  # `preprocess_input` mode the weights were trained with
    crop_fraction: float = 0.875
    interpolation: str = "bicubic"
    top1: Optional[float] = None  # published ImageNet top-1 %, at crop / interpolation
    top1_source: str = ""
    license: str = ""
    page: Optional[str] = None
    also_accepted: Tuple[Tuple[str, str], ...] = ()


def _timm(release, file_name, tag, top1, crop=0.875, interpolation="bicubic", hf=True,
          top1_source="timm results-imagenet.csv"):
    return Preset(
        source="timm", file_name=file_name, url=f"{TIMM_RELEASES}/{release}/{file_name}",
        sha256=file_name.rsplit("-", 1)[1].split(".")[0], preprocessing="torch",
        crop_fraction=crop, interpolation=interpolation, top1=top1,
        top1_source=f"{top1_source}, {tag}", license=TIMM_LICENSE,
        page=f"https://huggingface.co/timm/{tag}" if hf else None,
        also_accepted=((f"{tag}.safetensors",
                        f"https://huggingface.co/timm/{tag}/resolve/main/model.safetensors"),)
        if hf else ())


def _senet_release(mirror, file_name, top1, size, sha256=None, sha384=None):
    return Preset(
        source="caffe", file_name=file_name, url=f"{OMZ}/{mirror}/{file_name}", sha256=sha256,
        sha384=sha384, size=size, preprocessing="senet", crop_fraction=0.875,
        interpolation="bilinear", top1=top1, top1_source="SENet release README",
        license=SENET_LICENSE, page=SENET_PAGE)


def _torchvision(file_name, weights, top1, size_mib):
    """torchvision's own release: resize 256 → centre crop 224, bilinear (its
    `ImageClassification` preset); sha256 prefix in the file name (torch.hub's check);
    `size_mib` is its weights' `meta["_file_size"]`, MiB rounded to three decimals."""
    return Preset(
        source="torchvision", file_name=file_name, url=f"{TORCHVISION}/{file_name}",
        sha256=file_name.rsplit("-", 1)[1].split(".")[0], size=round(size_mib * MIB),
        size_tolerance=MIB // 2000, preprocessing="torch",
        crop_fraction=0.875, interpolation="bilinear", top1=top1,
        top1_source=f"torchvision {weights}.IMAGENET1K_V1 acc@1", license=TORCHVISION_LICENSE,
        page="https://pytorch.org/vision/stable/models/shufflenetv2.html")


PRESETS = {
    "sknet50.ra_in1k": _timm("v0.1-weights", "skresnext50_ra-f40e40bf.pth",
                     "skresnext50_32x4d.ra_in1k", 80.168),
    "skresnet18.ra_in1k": _timm("v0.1-weights", "skresnet18_ra-4eec2804.pth", "skresnet18.ra_in1k",
                        73.020),
    "skresnet34.ra_in1k": _timm("v0.1-weights", "skresnet34_ra-bdc0ccde.pth", "skresnet34.ra_in1k",
                        76.956),
    "resnext50.a1h_in1k": _timm("v0.1-rsb-weights", "resnext50_32x4d_a1h-0146ab0a.pth",
                       "resnext50_32x4d.a1h_in1k", 81.140, crop=0.95),
    "seresnext50.racm_in1k": _timm("v0.1-weights", "seresnext50_32x4d_racm-a304a460.pth",
                         "seresnext50_32x4d.racm_in1k", 81.268),
    # ResNeSt: the authors' weights as timm releases them (top-1 at the default size, 256
    # for 101e).
    "resnest50d.in1k": _timm("v0.1-resnest", "resnest50-528c19ca.pth", "resnest50d.in1k",
                             80.958, interpolation="bilinear"),
    **{f"{arch}.in1k": _timm("v0.1-resnest", file_name, f"{arch}.in1k", top1,
                             interpolation=interpolation, top1_source="timm model index")
       for arch, file_name, top1, interpolation in (
           ("resnest101e", "resnest101-22405ba7.pth", 82.88, "bilinear"),
           ("resnest50d_4s2x40d", "resnest50_fast_4s2x40d-41d14ed0.pth", 81.11, "bicubic"),
           ("resnest50d_1s4x24d", "resnest50_fast_1s4x24d-d4a4f76f.pth", 81.0, "bicubic"))},
    # timm's port of the SENet release (the release's caffemodel is on Google Drive only).
    "senet154.in1k": _timm("v0.1-weights", "legacy_senet154-e9eb9fe6.pth", "legacy_senet154.in1k",
                      81.320, interpolation="bilinear", hf=False),
    "seresnet50.caffe_in1k": _senet_release(
        "se-resnet-50", "SE-ResNet-50.caffemodel", 77.63, 112_602_669,
        sha256="72880fde3bd29b324bb302c80f49a098b8970597494c56525fd410a8d2ed5993"),
    "seresnet101.caffe_in1k": _senet_release(
        "se-resnet-101", "SE-ResNet-101.caffemodel", 78.25, 197_806_200,
        sha256="09777ce1202087954ee34ae2566cf611d03d2d8195ced0fe51b612ebf951d729"),
    "seresnet152.caffe_in1k": _senet_release(
        "se-resnet-152", "SE-ResNet-152.caffemodel", 78.66, 268_009_578,
        sha256="bbe7fc5b5068b7cd4b12ce1bb78f61bd3f48238a372e70ab9c0724afa778e5d1"),
    "seresnext50_caffe.caffe_in1k": _senet_release(
        "se-resnext-50", "SE-ResNeXt-50.caffemodel", 79.03, 110_550_637,
        sha256="f12c6b53c2dcd0f38f388d3d5f98cbfc039357e84842e661f28a49719dd52219"),
    "seresnext101_caffe.caffe_in1k": _senet_release(
        "se-resnext-101", "SE-ResNeXt-101.caffemodel", 80.19, 196_447_403,
        sha256="78dc95c9b768fdb32a0a3981a686edaf655df82973b051d818bae523c9a93c90"),
    # Release README: 23.62 % top-1 error (224 centre crop of the 256 short side).
    "se_bn_inception.caffe_in1k": _senet_release(
        mirror="se-inception", file_name="SE-BN-Inception.caffemodel", top1=76.38,
        size=47_855_246,
        sha384="b5d3a92296b83cb5c706140a1d2855903906c6c2176766bdd58303643c28a6aa"
               "9950cec2f318cb4f97778705c394d5d1"),
    # The official SKNet release: Google Drive / Baidu only, no direct download.
    "sknet50_caffe.caffe_in1k": Preset(
        source="caffe", file_name="SKNet-50.caffemodel", preprocessing="caffe",
        interpolation="bilinear", top1=79.21, top1_source="SKNet paper Table 2 (20.79 % error)",
        license="see https://github.com/implus/SKNet", page=SKNET_PAGE),
    "sknet101_caffe.caffe_in1k": Preset(
        source="caffe", file_name="SKNet-101.caffemodel", preprocessing="caffe",
        interpolation="bilinear", top1=79.81, top1_source="SKNet paper Table 2 (20.19 % error)",
        license="see https://github.com/implus/SKNet", page=SKNET_PAGE),
    "shufflenet_v2_x0_5.tv_in1k": _torchvision("shufflenetv2_x0.5-f707e7126e.pth",
                                       "ShuffleNet_V2_X0_5_Weights", 60.552, 5.282),
    "shufflenet_v2_x1_0.tv_in1k": _torchvision("shufflenetv2_x1-5666bf0f80.pth",
                                       "ShuffleNet_V2_X1_0_Weights", 69.362, 8.791),
}


def preset_key(name) -> Optional[str]:
    """The PRESETS key of `name`: "architecture.tag" itself, or an architecture's first
    (default) entry; None if there is none."""
    if name in PRESETS:
        return name
    return next((key for key in PRESETS if key.split(".", 1)[0] == name), None)


def get_preset(name) -> Optional[Preset]:
    """The preset "architecture.tag", or an architecture's default one (by registry name),
    or None."""
    key = preset_key(name)
    return PRESETS[key] if key else None


def models_with_weights():
    """Registry names with at least one preset."""
    return sorted({key.split(".", 1)[0] for key in PRESETS})


def preprocessing_mode(name):
    """`preprocess_input` mode of a registry model's ImageNet weights ("torch" if none)."""
    preset = get_preset(name)
    return preset.preprocessing if preset else "torch"


def evaluation_defaults(name=None):
    """(crop fraction, interpolation) the weights of `name` were published at."""
    preset = get_preset(name) if name else None
    return (preset.crop_fraction, preset.interpolation) if preset else (0.875, "bicubic")
