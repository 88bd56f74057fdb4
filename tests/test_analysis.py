"""The attention analysis (paper §6): its numbers against NumPy, its enlargement, its
figures, its command line, and a trainer run's weights."""

import importlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from command_cases import run_cases

from sknet_keras.analysis import attention_model, paper_unit_name
from sknet_keras.analysis import attention as attention_lib
from sknet_keras.analysis import enlarge as enlarge_lib
from sknet_keras.analysis import figures, measure, miniature, report, sources
from sknet_keras.applications import build_model, preprocessing_mode
from sknet_keras.registry import SKConfig, get_model_config
from sknet_keras.trainers.pipeline import eval_image, normalize
from sknet_keras.weights.files import load_weights, save_weights
from commands import ENV

ANALYSIS = [sys.executable, "-m", "sknet_keras.analysis"]
SIZE = 32
SCALES = (1.0, 1.5, 2.0)
# Class folders with 1, 2 and 3 images (a wrong average shows), and one image of no class.
FOLDER = {"ant": [(40, 48)], "bee": [(36, 36), (50, 40)], "cat": [(32, 44), (48, 48),
                                                                 (40, 56)]}


def run_analysis(args, env=ENV, check=True, timeout=300):
    proc = subprocess.run(ANALYSIS + args, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"analysis failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def write_folder(root, seed=0):
    rng = np.random.default_rng(seed)
    files = []
    for name, shapes in [("", [(44, 40)])] + list(FOLDER.items()):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i, (h, w) in enumerate(shapes):
            path = os.path.join(root, name, f"img{i}.png")
            tf.io.write_file(path, tf.io.encode_png(rng.integers(0, 256, (h, w, 3), np.uint8)))
            files.append(path)
    return files


def tiny_weights(path, seed=3):
    """mini_sknet with fixed, non-trivial weights (BN statistics included)."""
    keras.utils.set_random_seed(seed)
    model = build_model("mini_sknet", include_top=False, input_shape=(SIZE, SIZE, 3))
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith(("moving_variance", "gamma")):
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif w.path.endswith(("moving_mean", "beta")):
            w.assign(rng.normal(0, 0.2, w.shape).astype("float32"))
    save_weights(model, path)
    return path


def expected_attention(model, path, scales, crop, method, mode):
    """{unit: (scales, M, C)} attention of one image file, computed here image by image."""
    reader = attention_model(model)
    encoded = tf.io.read_file(path)
    out = {}
    for s in scales:
        image = normalize(eval_image(enlarge_lib.enlarged_file(encoded, s), SIZE, crop, method),
                          mode)
        for unit, a in reader(image[None], training=False).items():
            out.setdefault(unit, []).append(keras.ops.convert_to_numpy(a)[0])
    return {unit: np.stack(v) for unit, v in out.items()}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """One command-line run on the 3-class folder with fixed weights."""
    root = tmp_path_factory.mktemp("analysis")
    files = write_folder(str(root / "images"))
    weights = tiny_weights(str(root / "tiny.weights.h5"))
    out = root / "out"
    proc = run_analysis(["--model=mini_sknet", f"--weights={weights}", f"--image_size={SIZE}",
                         f"--image_dir={root / 'images'}", "--scales=1.0,1.5,2.0",
                         "--batch_size=4", f"--output_dir={out}", "--figure_images=1"])
    summary = json.loads((out / "summary.json").read_text())
    return dict(root=root, files=files, weights=weights, out=out, proc=proc, summary=summary)


# --- numbers -------------------------------------------------------------------------------

@pytest.mark.large
def test_summary_equals_numpy_per_image_per_class_and_overall(folder_run):
    summary, settings = folder_run["summary"], folder_run["summary"]["settings"]
    assert (settings["normalization"], settings["image_size"], settings["crop_fraction"],
            settings["interpolation"]) == (preprocessing_mode("mini_sknet"), SIZE, 0.875,
                                           "bicubic")
    model = build_model("mini_sknet", include_top=False, input_shape=(SIZE, SIZE, 3))
    load_weights(model, folder_run["weights"])
    root = str(folder_run["root"] / "images")
    expected = {os.path.relpath(p, root): expected_attention(
        model, p, SCALES, 0.875, "bicubic", settings["normalization"])
        for p in folder_run["files"]}
    images = {i["name"]: i for i in summary["images"]}
    assert sorted(images) == sorted(expected)
    assert summary["difference"]["larger_branch"] == 1
    for name, attention in expected.items():
        for unit, a in attention.items():
            for k, s in enumerate(SCALES):
                stats = images[name]["units"][unit][str(s)]
                means = a[k].astype(np.float64).mean(-1)
                np.testing.assert_allclose(stats["branch_means"], means, atol=2e-6)
                np.testing.assert_allclose(stats["difference"], means[1] - means[0], atol=4e-6)
    classes = {c["name"]: c for c in summary["classes"]}
    assert {c: classes[c]["images"] for c in classes} == {c: len(v) for c, v in FOLDER.items()}
    for cls in FOLDER:
        members = [a for n, a in expected.items() if n.startswith(cls + "/")]
        for unit in members[0]:
            diff = np.mean([a[unit][:, 1].mean(-1) - a[unit][:, 0].mean(-1) for a in members],
                           axis=0)
            got = [classes[cls]["units"][unit][str(s)]["difference"] for s in SCALES]
            np.testing.assert_allclose(got, diff, atol=4e-6)
    overall = np.mean([a["SK_3_2"][:, 1].mean(-1) - a["SK_3_2"][:, 0].mean(-1)
                       for a in expected.values()], axis=0)
    got = [summary["overall"]["units"]["SK_3_2"][str(s)]["difference"] for s in SCALES]
    np.testing.assert_allclose(got, overall, atol=4e-6)
    assert summary["overall"]["images"] == 7


@pytest.mark.large
def test_csv_and_npz_hold_the_summary(folder_run):
    import csv

    with open(folder_run["out"] / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    summary = folder_run["summary"]
    row = next(r for r in rows if r["level"] == "class" and r["item"] == "cat"
               and r["unit"] == "SK_2_1" and r["scale"] == "1.5")
    stats = next(c for c in summary["classes"] if c["name"] == "cat")["units"]["SK_2_1"]["1.5"]
    assert float(row["difference"]) == pytest.approx(stats["difference"], abs=1e-12)
    assert float(row["mean_branch1"]) == pytest.approx(stats["branch_means"][1], abs=1e-12)
    # overall + 3 classes + 7 images, each 6 units x 3 scales
    assert len(rows) == (1 + 3 + 7) * 6 * 3
    arrays = np.load(folder_run["out"] / "attention.npz")
    first = next(i for i in summary["images"] if i["name"] == str(arrays["names"][0]))
    np.testing.assert_allclose(arrays["means/SK_5_1"][2, 0],
                               first["units"]["SK_5_1"]["2.0"]["branch_means"], atol=1e-12)
    assert arrays["channels/SK_3_2"].shape == (3, 7, 16)  # the larger branch, per channel


def test_three_branches_compare_largest_with_smallest_field(tmp_path):
    config = get_model_config("mini_sknet").replace(
        name="mini_sknet_m3", sk=SKConfig(branches=((3, 1, None), (3, 2, None), (3, 3, None))))
    keras.utils.set_random_seed(5)
    model = build_model(config, include_top=False, input_shape=(SIZE, SIZE, 3))
    files = write_folder(str(tmp_path / "images"), seed=4)
    result = measure.collect(model, sources.image_folder(str(tmp_path / "images")), [1.0, 2.0],
                             SIZE, batch_size=3, channel_unit="SK_3_2", verbose=0)
    assert result.compare == (2, 0)
    path = next(p for p in files if p.endswith(os.path.join("bee", "img1.png")))
    attention = expected_attention(model, path, [1.0, 2.0], 0.875, "bicubic", "torch")
    i = result.names.index("bee/img1.png")
    for unit, a in attention.items():
        assert a.shape[1] == 3
        np.testing.assert_allclose(result.difference(unit)[:, i],
                                   a[:, 2].mean(-1) - a[:, 0].mean(-1), atol=4e-6)
    np.testing.assert_allclose(result.channels[:, i], attention["SK_3_2"][:, 2], atol=2e-6)
    summary = report.write(result, str(tmp_path / "out"))
    assert "3x3 d3 (7x7)" in summary["difference"]["definition"]
    assert [b["receptive_field"] for b in summary["branches"]["SK_2_1"]] == [3, 5, 7]
    assert len(figures.write_figures(result, str(tmp_path / "out"), figure_images=0)) == 3


# --- enlargement and preprocessing ---------------------------------------------------------

def test_enlargement_crops_the_centre_and_resizes_back():
    image = np.arange(8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    assert [int(v) for v in enlarge_lib.crop_window(8, 8, 2.0)] == [2, 2, 4, 4]
    assert [int(v) for v in enlarge_lib.crop_window(12, 9, 1.5)] == [2, 1, 8, 6]
    nearest = enlarge_lib.enlarge(image, 2.0, method="nearest").numpy()
    np.testing.assert_array_equal(nearest, image[2:6, 2:6].repeat(2, 0).repeat(2, 1))
    # Bilinear, half-pixel centres: output pixel i samples the crop at i / 2 - 1 / 4.
    crop = image[2:6, 2:6].astype(np.float64)
    pos = np.clip(np.arange(8) / 2 - 0.25, 0, 3)
    lo, frac = np.floor(pos).astype(int), pos - np.floor(pos)
    hi = np.minimum(lo + 1, 3)
    rows = crop[lo] * (1 - frac)[:, None, None] + crop[hi] * frac[:, None, None]
    expected = rows[:, lo] * (1 - frac)[None, :, None] + rows[:, hi] * frac[None, :, None]
    np.testing.assert_allclose(enlarge_lib.enlarge(image, 2.0).numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(enlarge_lib.enlarge(image, 1.0).numpy(), image)


def test_enlarged_file_is_the_rounded_enlargement_and_scale_one_the_trainer_input(rng):
    pixels = rng.integers(0, 256, (30, 40, 3), np.uint8)
    encoded = tf.io.encode_png(pixels)
    assert enlarge_lib.enlarged_file(encoded, 1.0) is encoded
    decoded = tf.io.decode_png(enlarge_lib.enlarged_file(encoded, 1.5)).numpy()
    reference = enlarge_lib.enlarge(pixels, 1.5).numpy()
    assert decoded.shape == (30, 40, 3)
    np.testing.assert_array_equal(decoded, np.round(reference.clip(0, 255)).astype(np.uint8))
    inputs = enlarge_lib.network_inputs(encoded, [1.0, 1.5], SIZE, 0.875, "bicubic", "caffe")
    plain = normalize(eval_image(encoded, SIZE, 0.875, "bicubic"), "caffe")
    np.testing.assert_array_equal(inputs[0].numpy(), plain.numpy())
    assert not np.allclose(inputs[1].numpy(), plain.numpy())


# --- figures -------------------------------------------------------------------------------

@pytest.mark.large
def test_figures_are_pngs_of_the_expected_size(folder_run):
    from matplotlib import image as mpimg

    out = folder_run["out"]
    height = int(figures.HEIGHT * figures.DPI)
    expected = {"units.png": height, "units_image0.png": height,
                "channels_SK_3_2.png": height, "channels_SK_3_2_image0.png": height,
                "classes.png": int(figures.CLASS_PANEL_HEIGHT * figures.DPI) * 3}
    assert sorted(p for p in os.listdir(out) if p.endswith(".png")) == sorted(expected)
    for name, h in expected.items():
        pixels = mpimg.imread(out / name)
        assert pixels.shape[:2] == (h, int(figures.WIDTH * figures.DPI)), name
        assert pixels[..., :3].std() > 0.05, name  # something is drawn
    assert "img/s" in folder_run["proc"].stdout and "SK_5_1" in folder_run["proc"].stdout


def test_figure_functions_take_arrays_and_return_figures(tmp_path):
    fig = figures.unit_curves(["SK_2_1", "SK_3_1"], np.array([[0.1, -0.1], [0.2, 0.0]]),
                              [1.0, 1.5])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["SK_2_1", "SK_3_1"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["1.0x", "1.5x"]
    path = figures.channel_curves(np.full((2, 16), 0.5), [1.0, 2.0], "SK_3_4",
                                  path=str(tmp_path / "c.png"))
    assert os.path.getsize(path) > 1000


def test_figures_without_matplotlib_say_what_to_install(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("matplotlib")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "sknet_keras.analysis.figures")
    with pytest.raises(ImportError, match=r'pip install "sknet-keras\[analysis\]"'):
        importlib.import_module("sknet_keras.analysis.figures")


# --- names and defaults --------------------------------------------------------------------

def test_unit_names_follow_the_paper():
    assert paper_unit_name("conv3_block4_2_sk") == "SK_3_4"
    assert paper_unit_name("conv2_block1_1_sk") == "SK_2_1"
    assert paper_unit_name("stage3_unit2_branch2_sk") == "SK_3_2"
    assert paper_unit_name("my_sk_layer") == "my_sk_layer"
    sknet50 = [f"SK_{s + 2}_{u + 1}" for s, d in enumerate((3, 4, 6, 3)) for u in range(d)]
    assert attention_lib.default_class_units(sknet50) == ["SK_2_3", "SK_3_4", "SK_5_3"]
    assert attention_lib.default_channel_unit(sknet50) == "SK_3_4"
    mini = ["SK_2_1", "SK_2_2", "SK_3_1", "SK_3_2", "SK_4_1", "SK_5_1"]
    assert attention_lib.default_class_units(mini) == ["SK_2_2", "SK_3_2", "SK_5_1"]
    assert attention_lib.default_channel_unit(mini) == "SK_3_2"
    assert attention_lib.default_branches(((3, 1, 32), (3, 2, 32))) == (1, 0)
    assert attention_lib.default_branches(((5, 1, 1), (3, 1, 1), (3, 3, 1))) == (2, 1)


def test_miniature_size_table_bins_images_by_object_size():
    def image(size, diff):
        return {"name": f"disk/0001_s{size}.png",
                "units": {"SK_2_1": {"1.0": {"difference": diff}}}}

    summary = {"settings": {"units": ["SK_2_1"]},
               "images": [image(10, 0.1), image(12, 0.3), image(40, -0.2), image(30, 0.5)]}
    rows = miniature.size_table(summary, bins=2)["SK_2_1"]
    assert [(r[1], round(r[2]["1.0"], 6)) for r in rows] == [(2, 0.2), (2, 0.15)]
    rng = np.random.default_rng(0)
    small, large = (miniature.draw("square", s, rng, 64, jitter=0, noise=0) for s in (10, 40))
    assert [np.any(x != x[0, 0], -1).sum() for x in (small, large)] == [100, 1600]


# --- command line --------------------------------------------------------------------------

@pytest.mark.large
def test_bad_requests_fail_in_one_line_with_status_2(folder_run, tmp_path):
    (tmp_path / "empty").mkdir()
    write_folder(str(tmp_path / "nested" / "train"))  # a trainer image folder's layout
    os.remove(tmp_path / "nested" / "train" / "img0.png")
    weights = f"--weights={folder_run['weights']}"
    images = f"--image_dir={folder_run['root'] / 'images'}"
    cases = [
        (["--model=resnext50", "--image_size=32", images], "resnext50 has no SK units"),
        (["--model=mini_sknet", weights, "--image_size=32", images, "--units=SK_9_9"],
         "unknown SK unit(s) SK_9_9"),
        (["--model=mini_sknet", weights, images, "--scales=1.0,0.5"], "must be >= 1"),
        (["--model=mini_sknet", weights, f"--image_dir={tmp_path / 'empty'}"], "no images"),
        (["--model=mini_sknet", weights, f"--image_dir={tmp_path / 'nested'}"],
         "holds images two folders down (train/<class>/*); give --image_dir="),
    ]
    results = run_cases("sknet_keras.analysis.__main__",  # one process for every case
                        [args + [f"--output_dir={tmp_path / 'out'}"] for args, _ in cases], ENV)
    for (code, _, stderr), (args, message) in zip(results, cases):
        lines = stderr.strip().splitlines()
        assert code == 2, (args, stderr)
        assert lines[0].startswith("sknet_keras.analysis: error:") and message in lines[0], \
            stderr
        assert len(lines) == 2 and "--helpfull" in lines[1], stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.large
def test_unreadable_images_are_named_and_skipped(folder_run, tmp_path):
    root = tmp_path / "images"
    write_folder(str(root))
    (root / "ant" / "text.jpg").write_bytes(b"notapng\n")
    png = bytearray((root / "bee" / "img0.png").read_bytes())
    png[60:-40] = bytes(len(png) - 100)  # framing intact, pixel data zeroed
    (root / "bee" / "zeroed.png").write_bytes(bytes(png))
    out = tmp_path / "out"
    proc = run_analysis(["--model=mini_sknet", f"--weights={folder_run['weights']}",
                         f"--image_size={SIZE}", f"--image_dir={root}", "--batch_size=4",
                         f"--output_dir={out}", "--figures=false"])
    named = [line for line in proc.stderr.splitlines() if "undecodable image" in line]
    assert len(named) == 2 and "ant/text.jpg" in named[0] and "bee/zeroed.png" in named[1]
    assert "skipped 2 unreadable image(s)" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    reference = folder_run["summary"]
    # The readable ones, same numbers (to float32 rounding: another batch size may take
    # other kernel blockings).
    assert_same_numbers(summary["images"], reference["images"])
    assert_same_numbers(summary["classes"], reference["classes"])


def assert_same_numbers(got, want, where="summary"):
    """Equal structure and strings; numbers equal to 1e-5."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            assert_same_numbers(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_numbers(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert abs(got - want) <= 1e-5 * max(1.0, abs(want)), (where, got, want)
    else:
        assert got == want, (where, got, want)


@pytest.mark.large
def test_trainer_run_dir_is_analysed_with_the_runs_weights(folder_run, tmp_path):
    from sknet_keras.trainers.checkpoints import latest_checkpoint, restore_checked

    run_dir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "sknet_keras.trainers.train", "--model=mini_sknet",
         "--max_steps=2", "--batch_size=16", "--export=false", f"--model_dir={run_dir}"],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    out = tmp_path / "out"
    run_analysis([f"--weights={run_dir}", f"--image_dir={folder_run['root'] / 'images'}",
                  "--scales=1.0,2.0", "--units=SK_2_1,SK_4_1", f"--output_dir={out}",
                  "--nofigures"])
    summary = json.loads((out / "summary.json").read_text())
    run_config = json.loads((run_dir / "config.json").read_text())
    assert summary["settings"]["model"] == "mini_sknet"
    assert summary["settings"]["image_size"] == run_config["data"]["image_size"] == SIZE
    assert summary["settings"]["normalization"] == run_config["data"]["normalization"]
    assert summary["settings"]["weights"] == latest_checkpoint(str(run_dir))
    # The trainer's own model (with its 10-class head), restored independently.
    trained = build_model("mini_sknet", input_shape=(SIZE, SIZE, 3), classes=10,
                          classifier_activation=None)
    restore_checked(tf.train.Checkpoint(model=trained), latest_checkpoint(str(run_dir)))
    fresh = build_model("mini_sknet", input_shape=(SIZE, SIZE, 3), classes=10)
    path = folder_run["files"][-1]
    name = os.path.relpath(path, folder_run["root"] / "images")
    got = next(i for i in summary["images"] if i["name"] == name)["units"]["SK_4_1"]
    for model, same in ((trained, True), (fresh, False)):
        a = expected_attention(model, path, [1.0, 2.0], 0.875, "bicubic",
                               run_config["data"]["normalization"])["SK_4_1"]
        means = a.astype(np.float64).mean(-1)
        close = np.allclose([got[s]["branch_means"] for s in ("1.0", "2.0")], means,
                            atol=2e-6)
        assert close == same


@pytest.mark.large
@pytest.mark.parametrize("backend,package", [
    pytest.param("jax", "jax", marks=pytest.mark.exhaustive), ("torch", "torch")])
def test_other_backends_give_the_tensorflow_numbers(backend, package, folder_run, tmp_path):
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed: the {backend} backend comparison needs "
                    f"`pip install {package}`")
    out = tmp_path / backend
    run_analysis(["--model=mini_sknet", f"--weights={folder_run['weights']}",
                  f"--image_size={SIZE}", f"--image_dir={folder_run['root'] / 'images'}",
                  "--scales=1.0,2.0", "--max_examples=4", f"--output_dir={out}",
                  "--nofigures"], env=dict(ENV, KERAS_BACKEND=backend))
    jax_summary = json.loads((out / "summary.json").read_text())
    tf_summary = folder_run["summary"]
    assert (jax_summary["settings"]["backend"], tf_summary["settings"]["backend"]) == (
        backend, "tensorflow")
    assert len(jax_summary["images"]) == 4
    for a, b in zip(jax_summary["images"], tf_summary["images"]):
        assert a["name"] == b["name"] and set(a["units"]["SK_2_1"]) == {"1.0", "2.0"}
        for unit, scales in a["units"].items():
            for s, stats in scales.items():
                np.testing.assert_allclose(stats["branch_means"],
                                           b["units"][unit][s]["branch_means"], atol=1e-5)
