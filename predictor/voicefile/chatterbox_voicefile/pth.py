"""A reader of `torch.save` files that needs no torch and builds nothing but tensors and containers.

`torch.save` writes a zip archive: `<name>/data.pkl` (a pickle whose tensors refer to storages by key),
`<name>/byteorder`, and one member per storage under `<name>/data/`. The pickle is untrusted. Our
unpickler resolves exactly the globals a tensor file needs (the tensor rebuild function, the typed
storage classes and `OrderedDict`), each to a stand-in of our own, so no code named by the file ever
runs: the same contract as `torch.load(weights_only=True)`, which the predictor also applies.
"""

from __future__ import annotations

import array
import io
import math
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass

from .names import MAX_VOICE_BYTES


class InvalidVoiceFile(ValueError):
    """Not a loadable voice: not a torch file, a pickle naming code, or the wrong structure."""


class _Sealed:
    """Pickle's BUILD opcode would write into an object's __dict__ (past `frozen`); ours refuse it."""

    def __setstate__(self, state):
        raise pickle.UnpicklingError("a pickle that sets attributes on a tensor or a storage")


class VoiceFileTooLarge(InvalidVoiceFile):
    pass


# Storage class -> (dtype name, element size, array typecode or None when decoded by hand).
_STORAGES = {
    "FloatStorage": ("float32", 4, "f"),
    "DoubleStorage": ("float64", 8, "d"),
    "HalfStorage": ("float16", 2, None),
    "BFloat16Storage": ("bfloat16", 2, None),
    "LongStorage": ("int64", 8, "q"),
    "IntStorage": ("int32", 4, "i"),
    "ShortStorage": ("int16", 2, "h"),
    "CharStorage": ("int8", 1, "b"),
    "ByteStorage": ("uint8", 1, "B"),
    "BoolStorage": ("bool", 1, "B"),
}
FLOATING = {"float32", "float64", "float16", "bfloat16"}


@dataclass(frozen=True)
class _StorageType(_Sealed):
    dtype: str
    itemsize: int
    typecode: str | None


@dataclass
class _Storage(_Sealed):
    kind: _StorageType
    values: list | array.array


@dataclass(frozen=True)
class TensorData(_Sealed):
    """A tensor read from the file: dtype name, shape, and its elements in row-major order."""

    dtype: str
    shape: tuple[int, ...]
    values: tuple

    @property
    def floating(self) -> bool:
        return self.dtype in FLOATING

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def all_finite(self) -> bool:
        return all(math.isfinite(v) for v in self.values)


def _decode(raw: bytes, kind: _StorageType, little_endian: bool) -> list | array.array:
    if kind.typecode is not None:
        values = array.array(kind.typecode)
        values.frombytes(raw)
        if little_endian != (sys.byteorder == "little"):
            values.byteswap()
        return values
    order = "<" if little_endian else ">"
    count = len(raw) // 2
    if kind.dtype == "float16":
        return list(struct.unpack(f"{order}{count}e", raw))
    # bfloat16 is the top half of a float32: widen each value by 16 zero bits.
    halves = struct.unpack(f"{order}{count}H", raw)
    return list(struct.unpack(f"<{count}f", struct.pack(f"<{count}I", *(h << 16 for h in halves))))


def _gather(storage: _Storage, offset: int, shape: tuple, stride: tuple) -> tuple:
    size = math.prod(shape)
    if size == 0:
        return ()
    if size > MAX_VOICE_BYTES:  # a zero stride repeats one element: a tiny file could ask for billions
        raise VoiceFileTooLarge(f"a tensor of shape {shape} is larger than any voice")
    # The furthest element the view reaches must lie inside the storage.
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if offset < 0 or any(s < 0 for s in stride) or last >= len(storage.values):
        raise InvalidVoiceFile("a tensor reaches outside its storage")
    contiguous, expected = True, 1
    for n, s in zip(reversed(shape), reversed(stride), strict=True):
        if n != 1 and s != expected:
            contiguous = False
        expected *= n
    if contiguous:
        values = storage.values[offset:offset + size]
    else:
        index = [offset]
        for n, s in zip(shape, stride, strict=True):
            index = [i + k * s for i in index for k in range(n)]
        values = [storage.values[i] for i in index]
    if storage.kind.dtype == "bool":
        return tuple(bool(v) for v in values)
    return tuple(values)


def _rebuild_tensor(storage, offset, shape, stride, requires_grad=False, hooks=None, metadata=None):
    """Our stand-in for torch._utils._rebuild_tensor_v2: a TensorData, nothing else."""
    if not isinstance(storage, _Storage):
        raise InvalidVoiceFile("a tensor without a storage")
    if not (isinstance(offset, int) and isinstance(shape, tuple) and isinstance(stride, tuple)
            and len(shape) == len(stride) and all(isinstance(v, int) and v >= 0 for v in shape)
            and all(isinstance(v, int) for v in stride)):
        raise InvalidVoiceFile("a tensor with a malformed shape or stride")
    if hooks:
        raise InvalidVoiceFile("a tensor with backward hooks")
    return TensorData(storage.kind.dtype, shape, _gather(storage, offset, shape, stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, little_endian: bool):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._little = archive, prefix, little_endian
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGES:
            return _StorageType(*_STORAGES[name])
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not a tensor or a plain container")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]}")
        _, kind, key, _location, numel = pid
        if key not in self._storages:
            try:
                info = self._archive.getinfo(f"{self._prefix}data/{key}")
            except KeyError:
                raise InvalidVoiceFile(f"storage {key!r} is missing from the archive") from None
            if info.file_size > MAX_VOICE_BYTES:  # a compressed member may claim to inflate to anything
                raise VoiceFileTooLarge(f"storage {key!r} is {info.file_size} bytes unpacked")
            raw = self._archive.read(info)
            if len(raw) != numel * kind.itemsize:
                raise InvalidVoiceFile(f"storage {key!r} holds {len(raw)} bytes, "
                                       f"not {numel} x {kind.itemsize}")
            self._storages[key] = _Storage(kind, _decode(raw, kind, self._little))
        storage = self._storages[key]
        if storage.kind != kind:
            raise InvalidVoiceFile(f"storage {key!r} is read as two different types")
        return storage


def read_pth(raw: bytes):
    """The object a `torch.save` file holds, with every tensor as a TensorData.

    Raises InvalidVoiceFile for anything else: not a zip-format torch file, truncated, a pickle that
    names any other global (a payload), or more than MAX_VOICE_BYTES.
    """
    if len(raw) > MAX_VOICE_BYTES:
        raise VoiceFileTooLarge(f"voice file is {len(raw)} bytes; the limit is {MAX_VOICE_BYTES}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidVoiceFile(f"not a voice file: not a torch.save archive ({exc})") from exc
    if len(pickles) != 1:
        raise InvalidVoiceFile("not a voice file: a torch.save archive holds exactly one data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    try:
        names = set(archive.namelist())
        order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        if order not in ("little", "big"):
            raise InvalidVoiceFile(f"unknown byte order {order[:20]!r}")
        info = archive.getinfo(pickles[0])
        if info.file_size > MAX_VOICE_BYTES:
            raise VoiceFileTooLarge(f"data.pkl is {info.file_size} bytes unpacked")
        return _Unpickler(archive.read(info), archive, prefix, order == "little").load()
    except InvalidVoiceFile:
        raise
    except pickle.UnpicklingError as exc:
        raise InvalidVoiceFile(f"not a voice file: it holds objects other than tensors ({exc})") from exc
    except Exception as exc:  # truncated or corrupt members fail in many ways (zlib, EOF, CRC, struct)
        raise InvalidVoiceFile(f"not a voice file: {type(exc).__name__}: {str(exc)[:200]}") from exc
