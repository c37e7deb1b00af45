"""Read a PyTorch ``state_dict`` file into NumPy arrays without importing torch.

PyTorch's ``torch.save`` writes pickles, and unpickling an untrusted pickle
can run arbitrary code. This module therefore never uses plain
``pickle.load`` on the main object: it uses an ``Unpickler`` whose
``find_class`` accepts only the handful of globals a plain state dict needs
(``collections.OrderedDict``, the tensor rebuild helpers and the storage
types) and refuses everything else with :class:`UnsafePickleError`. The
"rebuild" helpers are our own NumPy functions, not torch's.

Two on-disk layouts exist:

* The legacy layout (``torch.save(..., _use_new_zipfile_serialization=False)``
  and every file written before PyTorch 1.6): five things one after another in
  one stream: a pickled magic number, a pickled protocol version, a pickled
  dict of system information, the main pickle (whose persistent ids name
  storages), a pickled list of storage keys, and then, for each key in that
  order, an 8-byte little-endian element count followed by the raw
  little-endian elements.
* The zip layout (PyTorch 1.6 and later): a zip archive holding
  ``<name>/data.pkl`` (the main pickle) and one raw file per storage,
  ``<name>/data/<key>``.

Both are read here; the main pickle is handled by the same restricted
unpickler in either case.

Reference:
    ``torch/serialization.py`` (``_legacy_load`` and ``_load``) in
    https://github.com/pytorch/pytorch
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import struct
import zipfile

import numpy

__all__ = [
    "ChecksumError",
    "UnsafePickleError",
    "UnsupportedFormatError",
    "load_state_dict",
    "sha256_of_file",
]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
"""The first pickled object of a legacy ``torch.save`` file."""

STORAGE_DTYPES = {
    "DoubleStorage": numpy.dtype("<f8"),
    "FloatStorage": numpy.dtype("<f4"),
    "HalfStorage": numpy.dtype("<f2"),
    "LongStorage": numpy.dtype("<i8"),
    "IntStorage": numpy.dtype("<i4"),
    "ShortStorage": numpy.dtype("<i2"),
    "CharStorage": numpy.dtype("i1"),
    "ByteStorage": numpy.dtype("u1"),
    "BoolStorage": numpy.dtype("?"),
}
"""``torch.<Name>Storage`` class names mapped to the NumPy dtype of their data."""


class ChecksumError(ValueError):
    """The file's SHA-256 is not the one expected."""


class UnsafePickleError(ValueError):
    """The pickle names a global that a plain state dict never needs."""


class UnsupportedFormatError(ValueError):
    """The file is not a PyTorch serialization this module can read."""


def sha256_of_file(path) -> str:
    """Return the hexadecimal SHA-256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Storage:
    """A storage named by the pickle; ``data`` is filled in once read."""

    def __init__(self, dtype: numpy.dtype, element_count: int | None):
        self.dtype = dtype
        self.element_count = element_count
        self.data: numpy.ndarray | None = None


class _StorageView:
    """A legacy view into part of another storage (rare)."""

    def __init__(self, base: _Storage, offset: int, element_count: int):
        self.base = base
        self.offset = offset
        self.element_count = element_count

    @property
    def data(self) -> numpy.ndarray:
        return self.base.data[self.offset : self.offset + self.element_count]


class _PendingTensor:
    """A tensor whose storage bytes have not been read yet."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage = storage
        self.storage_offset = int(storage_offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def materialize(self) -> numpy.ndarray:
        flat = self.storage.data
        if flat is None:
            raise UnsupportedFormatError("a tensor refers to a storage that was never read")
        element_count = 1
        for dimension in self.size:
            element_count *= dimension
        if element_count == 0:
            return numpy.zeros(self.size, dtype=flat.dtype)
        last_index = self.storage_offset + sum(
            (dimension - 1) * step for dimension, step in zip(self.size, self.stride)
        )
        if self.storage_offset < 0 or last_index >= flat.size or min(self.stride, default=0) < 0:
            raise UnsupportedFormatError("a tensor's size/stride/offset lies outside its storage")
        itemsize = flat.dtype.itemsize
        view = numpy.lib.stride_tricks.as_strided(
            flat[self.storage_offset :],
            shape=self.size,
            strides=tuple(step * itemsize for step in self.stride),
            writeable=False,
        )
        return numpy.array(view, dtype=flat.dtype.newbyteorder("="), copy=True)


class _StorageType:
    """Stand-in for ``torch.<Name>Storage``; only its dtype matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _PendingTensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _PendingTensor(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for a state dict: a few known globals, storages by persistent id."""

    def __init__(self, file, storage_for_key):
        super().__init__(file)
        self._storage_for_key = storage_for_key
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(f"refusing to unpickle the global {module}.{name}")

    def persistent_load(self, persistent_id):
        if self._storage_for_key is None:
            raise UnsupportedFormatError("a storage is named where none may be")
        if not (isinstance(persistent_id, tuple) and len(persistent_id) >= 5
                and persistent_id[0] == "storage"):
            raise UnsupportedFormatError(f"unexpected persistent id {persistent_id!r}")
        storage_type, key, _location, element_count = persistent_id[1:5]
        view_metadata = persistent_id[5] if len(persistent_id) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise UnsupportedFormatError(f"unexpected storage type {storage_type!r}")
        key = str(key)
        storage = self.storages.get(key)
        if storage is None:
            storage = self._storage_for_key(key, storage_type.dtype, int(element_count))
            self.storages[key] = storage
        if view_metadata is not None:
            _view_key, offset, view_size = view_metadata
            return _StorageView(storage, int(offset), int(view_size))
        return storage


def _materialize(obj):
    """Replace every pending tensor in a (nested) dict by its NumPy array."""
    if isinstance(obj, _PendingTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return {key: _materialize(value) for key, value in obj.items()}
    return obj


def _read_legacy(file) -> dict:
    # The three header pickles and the key list hold only ints, strings and dicts.
    magic = _RestrictedUnpickler(file, storage_for_key=None).load()
    if magic != LEGACY_MAGIC_NUMBER:
        raise UnsupportedFormatError("not a PyTorch file: wrong magic number")
    protocol_version = _RestrictedUnpickler(file, storage_for_key=None).load()
    if protocol_version != 1001:
        raise UnsupportedFormatError(f"unsupported legacy protocol version {protocol_version!r}")
    system_info = _RestrictedUnpickler(file, storage_for_key=None).load()
    if not system_info.get("little_endian", True):
        raise UnsupportedFormatError("big-endian PyTorch files are not supported")

    unpickler = _RestrictedUnpickler(
        file, storage_for_key=lambda key, dtype, count: _Storage(dtype, count)
    )
    result = unpickler.load()
    storage_keys = _RestrictedUnpickler(file, storage_for_key=None).load()
    for key in storage_keys:
        storage = unpickler.storages.get(str(key))
        if storage is None:
            raise UnsupportedFormatError(f"storage {key!r} is listed but never used")
        (element_count,) = struct.unpack("<q", file.read(8))
        byte_count = element_count * storage.dtype.itemsize
        raw = file.read(byte_count)
        if len(raw) != byte_count:
            raise UnsupportedFormatError("file ends inside a storage")
        storage.data = numpy.frombuffer(raw, dtype=storage.dtype)
    return result


def _read_zip(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        pickle_names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickle_names) != 1:
            raise UnsupportedFormatError("zip file holds no single data.pkl; not a torch.save file")
        prefix = pickle_names[0][: -len("data.pkl")]

        def storage_for_key(key, dtype, element_count):
            storage = _Storage(dtype, element_count)
            try:
                raw = archive.read(f"{prefix}data/{key}")
            except KeyError:
                raise UnsupportedFormatError(f"storage {key!r} is missing from the zip") from None
            if len(raw) != element_count * dtype.itemsize:
                raise UnsupportedFormatError(f"storage {key!r} has the wrong length")
            storage.data = numpy.frombuffer(raw, dtype=dtype)
            return storage

        with archive.open(pickle_names[0]) as file:
            return _RestrictedUnpickler(io.BytesIO(file.read()), storage_for_key).load()


def load_state_dict(path, expected_sha256: str | None = None) -> dict[str, numpy.ndarray]:
    """Load a PyTorch state dict as NumPy arrays, without torch and without running code.

    Args:
        path: A file written by ``torch.save(model.state_dict(), path)``, in
            either the legacy or the zip layout.
        expected_sha256: If given, the hexadecimal SHA-256 the file must have;
            it is checked before anything is unpickled.

    Returns:
        A dict from parameter name (such as ``"_conv_stem.weight"``) to a
        NumPy array with PyTorch's shape and dtype, in the file's order.

    Raises:
        ChecksumError: The file's SHA-256 differs from ``expected_sha256``.
        UnsafePickleError: The pickle names a global other than
            ``collections.OrderedDict``, the tensor rebuild helpers or a
            ``torch.<Type>Storage``; nothing it names is ever called.
        UnsupportedFormatError: The file is not a readable torch.save file.
    """
    path = os.fspath(path)
    if expected_sha256 is not None:
        actual = sha256_of_file(path)
        if actual.lower() != expected_sha256.lower():
            raise ChecksumError(
                f"{path}: SHA-256 mismatch: expected {expected_sha256.lower()}, got {actual}"
            )
    if zipfile.is_zipfile(path):
        result = _read_zip(path)
    else:
        with open(path, "rb") as file:
            result = _read_legacy(file)
    if not isinstance(result, dict):
        raise UnsupportedFormatError(f"{path}: holds a {type(result).__name__}, not a state dict")
    return _materialize(result)
