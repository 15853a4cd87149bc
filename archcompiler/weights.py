"""Framework-neutral weights: canonical names, layouts, deterministic init, save and load.

One layout for every backend, chosen to be Keras' (channels-last) so that a checkpoint of
keras.applications maps onto it by name alone; a backend converts on the way in and out:

==================  ===============================  =========================================
node                tensor (``<node>.<param>``)       canonical shape
==================  ===============================  =========================================
conv2d              kernel, bias                      (kh, kw, in/groups, out), (out,)
depthwise_conv2d    kernel, bias                      (kh, kw, C, M), (C*M,)
dense               kernel, bias                      (in, out), (out,)
batchnorm           gamma, beta, moving_mean,         (C,) each
                    moving_variance
==================  ===============================  =========================================

Files are ``.npz`` (numpy) or ``.safetensors`` (read and written here; the package is not
needed). Loading never unpickles, reads every header before any data, and refuses what a trained
float network cannot hold (see :func:`load`, :func:`check_values`). numpy is imported lazily so
that ``import archcompiler`` stays cheap.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import zipfile
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from archcompiler import ir
from archcompiler.files import atomic_write
from archcompiler.language.source import file_kind
from archcompiler.ops.base import Layout
from archcompiler.text import listing

if TYPE_CHECKING:
    import numpy as np


class Weights(dict[str, "np.ndarray"]):
    """Canonical weights: tensor name (``<node>.<param>``) -> array, in graph order. A plain
    dict in every way but its repr, which summarises (a dict of MobileNet's arrays prints
    about 100,000 characters)."""

    def __repr__(self) -> str:
        values = sum(int(getattr(a, "size", 0)) for a in self.values())
        dtypes = sorted({str(getattr(a, "dtype", type(a).__name__)) for a in self.values()})
        if not self:
            return "<Weights: no tensors>"
        return f"<Weights: {listing(list(self), 3)}; {values:,} {'/'.join(dtypes)} values>"


class WeightError(ValueError):
    """A weights file that does not fit the graph: names the tensor at fault."""


@dataclass(frozen=True)
class TensorSpec:
    """One canonical tensor of a graph: ``<node>.<param>``, its shape, layout and init rule."""

    node: str
    param: str
    shape: tuple[int, ...]
    layout: Layout
    init: str = "bias"
    fan_in: int = 0
    trainable: bool = True
    fill: str = "zeros"
    fan_out: int = 0
    value: float | tuple[float, ...] = 0.0

    @property
    def name(self) -> str:
        return f"{self.node}.{self.param}"


def specs(graph: ir.Graph) -> dict[str, TensorSpec]:
    """Every tensor the graph needs, in node order, keyed by canonical name (from each op's
    :meth:`~archcompiler.ops.Node.weights`)."""
    out: dict[str, TensorSpec] = {}
    for n in graph.nodes:
        for w in n.weights():
            t = TensorSpec(
                n.name, w.param, tuple(w.shape), w.layout, w.init, w.fan_in, w.trainable, w.fill, w.fan_out, w.value
            )
            out[t.name] = t
    return out


def expected(graph: ir.Graph) -> dict[str, tuple[int, ...]]:
    """Every tensor the graph needs, with its canonical shape, in node order."""
    return {name: t.shape for name, t in specs(graph).items()}


def check(graph: ir.Graph, weights: Weights, *, origin: str = "weights") -> None:
    """Raise WeightError on a missing, unexpected or misshapen tensor (the first, by name), or on
    values no trained network has: a dtype other than float16/32/64, NaN or infinity, a negative
    moving variance. Checked before use so that a bad file fails here, not as NaN logits later."""
    if not isinstance(weights, Mapping):
        raise WeightError(f"{origin}: expected a mapping of tensor names to arrays, got {type(weights).__name__}")
    want = expected(graph)
    for name, shape in want.items():
        if name not in weights:
            raise WeightError(f"{origin}: missing tensor {name!r} (shape {shape})")
        if not hasattr(weights[name], "shape"):  # a number, a string, a list: not an array
            raise WeightError(f"{origin}: tensor {name!r} is a {type(weights[name]).__name__}, not an array")
        got = tuple(weights[name].shape)
        if got != shape:
            raise WeightError(f"{origin}: tensor {name!r} has shape {got}, expected {shape}")
    extra = [k for k in weights if k not in want]
    odd = next((k for k in extra if not isinstance(k, str)), None)
    if odd is not None:
        raise WeightError(f"{origin}: tensor names are strings, got {odd!r}")
    if extra:
        raise WeightError(
            f"{origin}: unexpected tensor {extra[0]!r}" + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for name in want:
        check_values(name, weights[name], origin=origin)


def init(graph: ir.Graph, seed: int = 0) -> Weights:
    """Parity's probe: deterministic, non-trivial weights: He-scaled kernels, BN statistics
    away from 0 and 1 (a model to compare, not to train: :func:`training_init` is that).

    Each tensor's stream depends only on the seed and the tensor's name, so adding a layer
    does not change the others. Non-trivial BN statistics matter for parity: with mean 0
    and variance 1 a backend that ignored them would still pass.
    """
    import numpy as np

    out = Weights()
    for name, t in specs(graph).items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if t.init == "he":
            arr = rng.normal(0.0, np.sqrt(2.0 / max(t.fan_in, 1)), size=t.shape)
        elif t.init == "gamma":
            arr = rng.uniform(0.5, 1.5, size=t.shape)
        elif t.init in ("beta", "moving_mean"):
            arr = rng.normal(0.0, 0.2, size=t.shape)
        elif t.init == "moving_variance":
            arr = rng.uniform(0.5, 2.0, size=t.shape)
        else:  # bias
            arr = rng.normal(0.0, 0.1, size=t.shape)
        out[name] = arr.astype(np.float32)
    return out


SEEDS = range(2**32)
"""The seeds :func:`init` and :func:`training_init` take (numpy's seed words are 32-bit)."""


def training_init(graph: ir.Graph, seed: int = 0) -> Weights:
    """The weights every build starts from unless given others: the same tensors in every
    backend, so that builds of one spec for torch, keras, onnx and tflite are one model.

    The TensorFlow reference MnasNet/EfficientNet initialisation ("goog", timm's
    ``_init_weight_goog``), as each op declares it (``WeightSpec.fill`` and ``fan_out``):
    conv kernels normal(0, sqrt(2 / fan_out)) with fan_out = kh * kw * out / groups, dense
    kernels uniform(-1 / sqrt(units), 1 / sqrt(units)), biases 0, BatchNorm gamma 1, beta 0,
    moving mean 0, moving variance 1. Each tensor's stream depends only on the seed and its
    canonical name, as in :func:`init`. float32.
    """
    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in SEEDS:
        raise WeightError(f"seed must be a whole number from 0 to {SEEDS[-1]}, got {seed!r}")
    out = Weights()
    for name, t in specs(graph).items():
        if t.fill in ("zeros", "ones", "constant"):
            value = {"zeros": 0.0, "ones": 1.0}.get(t.fill, t.value)
            out[name] = np.full(t.shape, value, dtype=np.float32)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        # drawn in float32 (a third of the time of float64 draws: MobileNet 1.0 has 4.2M values)
        if t.fill == "normal_fan_out":
            arr = rng.standard_normal(t.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / max(t.fan_out, 1)))
        elif t.fill == "uniform_fan_out":
            limit = np.float32(1.0 / np.sqrt(max(t.fan_out, 1)))
            arr = (rng.random(t.shape, dtype=np.float32) * 2 - 1) * limit
        else:
            raise WeightError(f"tensor {name!r}: unknown fill {t.fill!r}")
        out[name] = arr
    return out


FLOAT_DTYPES = ("float16", "float32", "float64")
"""The only element types a weights file may hold: anything else (int8, bool, complex, strings,
objects) is not a trained float network's weights, and objects would need unpickling."""

MAX_TENSORS = 10_000
"""Most tensors a weights file may list (MobileNet has 137)."""

MAX_WEIGHT_BYTES = 1 << 30
"""Largest weights file, and largest total of tensor data, read when no graph bounds them (1 GiB;
MobileNet 1.0 is 17 MB in float32). With a graph, the file may be at most what the graph's
tensors take in float64 plus :data:`TENSOR_OVERHEAD` each: that bounds everything a file can
make us allocate (zip directory entries, headers, data) by what the graph needs."""

TENSOR_OVERHEAD = 16 << 10
"""Bytes allowed per tensor besides its data (an .npy header may be 10,000 bytes, numpy's own
limit; zip entries and safetensors' JSON entries are a few hundred)."""

MAX_SAFETENSORS_HEADER = 1 << 20
"""Largest JSON header of a .safetensors file parsed (1 MiB; about 100 bytes per tensor)."""

_SAFETENSORS_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


def check_values(name: str, value: object, *, origin: str = "weights") -> None:
    """Raise WeightError unless ``value`` is a float16/32/64 array of finite numbers (and, for a
    moving variance, non-negative ones)."""
    import numpy as np

    arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
        raise WeightError(f"{origin}: tensor {name!r} has dtype {arr.dtype}, expected one of {', '.join(FLOAT_DTYPES)}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise WeightError(
            f"{origin}: tensor {name!r} has {bad:,} non-finite values (NaN or infinity), "
            f"the first at index {first}: {arr[first]}"
        )
    if name.rsplit(".", 1)[-1] == "moving_variance" and arr.size and arr.min() < 0:
        raise WeightError(
            f"{origin}: tensor {name!r} has negative values (min {float(arr.min()):g}); a variance cannot be negative"
        )


def save(weights: Weights, path: str | Path) -> Path:
    """Write atomically (temp file + rename): a failed write leaves nothing behind.

    Every tensor must be a float16/32/64 array (:func:`check_values`): what is written here
    must load again, and ``np.save`` would pickle an object array. ``.safetensors`` is written
    by :func:`_write_safetensors`, so the safetensors package is needed for neither direction.
    """
    import numpy as np

    p = Path(path)
    if p.suffix not in (".npz", ".safetensors"):
        raise WeightError(f"{p}: unknown weights format {p.suffix!r} (use .npz or .safetensors)")
    for name, value in weights.items():
        if not isinstance(value, np.ndarray):
            raise WeightError(f"{p}: tensor {name!r} is a {type(value).__name__}, not a numpy array")
        check_values(name, value, origin=str(p))

    def write(tmp: str) -> None:
        if p.suffix == ".safetensors":
            _write_safetensors(weights, tmp)
        else:
            with open(tmp, "wb") as fh:
                np.savez(fh, allow_pickle=False, **weights)

    return atomic_write(p, write)


def _write_safetensors(weights: Weights, path: str) -> None:
    """The safetensors format (https://github.com/huggingface/safetensors#format): an 8-byte
    little-endian header length, a JSON header padded with spaces to 8 bytes, then the tensors'
    little-endian bytes back to back."""
    import numpy as np

    codes = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
    header: dict[str, object] = {}
    offset = 0
    for name, arr in weights.items():
        n = arr.size * arr.dtype.itemsize
        header[name] = {
            "dtype": codes[arr.dtype.newbyteorder("<")],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for arr in weights.values():
            fh.write(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes())


@dataclass(frozen=True)
class _Header:
    """What a file says about one tensor, read before any of its data: shape, element type and
    where the data is (an .npz member, or a byte range of a .safetensors file)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool = False
    member: zipfile.ZipInfo | None = None
    start: int = 0

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def load(path: str | Path, graph: ir.Graph | None = None, *, skip: Collection[str] = ()) -> Weights:
    """Read a .npz or .safetensors weights file, validating it before use.

    Headers first: every tensor's name, shape and dtype are read from the file's own headers
    and, given ``graph``, compared with :func:`expected` before any tensor data is read, so a
    file that claims terabytes, or a zip member that inflates to gigabytes, fails without
    allocating them. Then each tensor's values (:func:`check_values`). Nothing is unpickled.
    Every failure is a :class:`WeightError` naming the file and, where there is one, the tensor.
    Tensors whose last name part is in ``skip`` (another implementation's counters, such as
    torch's ``num_batches_tracked``) are left unread, whatever their element type.
    """
    p = Path(path)
    if p.suffix not in (".npz", ".safetensors"):
        raise WeightError(f"{p}: unknown weights format {p.suffix!r} (use .npz or .safetensors)")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise WeightError(f"{p}: no such weights file") from None
    except OSError as exc:
        raise WeightError(f"{p}: cannot read weights ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise WeightError(f"{p}: is {file_kind(st.st_mode)}, not a weights file")
    want = expected(graph) if graph is not None else None
    limit = _size_limit(want)
    if st.st_size > limit:
        raise WeightError(f"{p}: is {st.st_size:,} bytes, more than the {limit:,} its tensors can take")
    try:
        # non-blocking, and checked again on the descriptor: a FIFO swapped in after os.stat
        # must not block the open
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise WeightError(f"{p}: is {file_kind(mode)}, not a weights file")
            if p.suffix == ".npz":
                return _load_npz(p, fh, want, limit, skip)
            return _load_safetensors(p, fh, want, st.st_size, skip)
    except _READ_ERRORS as exc:
        raise unreadable(p, exc) from None


_READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)
"""What reading a damaged file raises: a bad CRC or zip directory (BadZipFile), a truncated member
(EOFError), a bad deflate stream (zlib.error), a bad .npy header (ValueError), an unsupported zip
compression (NotImplementedError)."""


def unreadable(p: str | Path, exc: BaseException, name: str | None = None) -> WeightError:
    """``exc`` as a one-line WeightError (a WeightError passes through unchanged)."""
    if isinstance(exc, WeightError):
        return exc
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    where = f"tensor {name!r}: " if name else ""
    return WeightError(f"{p}: {where}cannot read weights ({text})")


def _size_limit(want: dict[str, tuple[int, ...]] | None) -> int:
    """The largest file (and total of tensor data) accepted: see :data:`MAX_WEIGHT_BYTES`."""
    if want is None:
        return MAX_WEIGHT_BYTES
    return sum(8 * math.prod(s) + TENSOR_OVERHEAD for s in want.values()) + TENSOR_OVERHEAD


def _admit_names(p: Path, names: list[str], want: dict[str, tuple[int, ...]] | None) -> None:
    """Refuse a file by its tensor names alone: too many, duplicates, missing or unexpected ones."""
    if len(names) > MAX_TENSORS:
        raise WeightError(f"{p}: holds {len(names):,} tensors, more than {MAX_TENSORS:,}")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise WeightError(f"{p}: tensor {n!r} appears more than once")
        seen.add(n)
    if want is not None:
        for name, shape in want.items():
            if name not in seen:
                raise WeightError(f"{p}: missing tensor {name!r} (shape {shape})")
        extra = [n for n in names if n not in want]
        if extra:
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise WeightError(f"{p}: unexpected tensor {extra[0]!r}{more}")


def _admit(p: Path, h: _Header, want: dict[str, tuple[int, ...]] | None, total: int, limit: int) -> int:
    """Refuse one tensor by its header: a dtype other than float16/32/64, a shape other than the
    graph's, or data that takes the running ``total`` past ``limit``. Returns the new total."""
    if h.dtype.kind != "f" or h.dtype.itemsize not in (2, 4, 8):
        raise WeightError(f"{p}: tensor {h.name!r} has dtype {h.dtype}, expected one of {', '.join(FLOAT_DTYPES)}")
    if any(d < 0 for d in h.shape):
        raise WeightError(f"{p}: tensor {h.name!r} has a negative dimension {h.shape}")
    if want is not None and h.shape != want[h.name]:
        raise WeightError(f"{p}: tensor {h.name!r} has shape {h.shape}, expected {want[h.name]}")
    total += h.nbytes
    if total > limit:
        raise WeightError(f"{p}: tensor {h.name!r} ({h.shape} {h.dtype}) takes the data past {limit:,} bytes")
    return total


def _finish(p: Path, headers: list[_Header], data: dict[str, bytes]) -> Weights:
    """Arrays (native byte order, writable) from each tensor's bytes, their values checked."""
    import numpy as np

    out = Weights()
    for h in headers:
        arr = np.frombuffer(data[h.name], dtype=h.dtype).reshape(h.shape, order="F" if h.fortran else "C")
        arr = np.array(arr, dtype=h.dtype.newbyteorder("="), order="C")
        check_values(h.name, arr, origin=str(p))
        out[h.name] = arr
    return out


def _read_exact(fh: BinaryIO, n: int, p: Path, name: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise WeightError(f"{p}: tensor {name!r} is truncated ({len(data):,} of {n:,} bytes)")
    return data


def _skipped(name: str, skip: Collection[str]) -> bool:
    return bool(skip) and name.rsplit(".", 1)[-1] in skip


def _load_npz(
    p: Path, fh: BinaryIO, want: dict[str, tuple[int, ...]] | None, limit: int, skip: Collection[str] = ()
) -> Weights:
    """An ``np.savez`` archive, member by member through :mod:`zipfile`: names from the zip
    directory, shape and dtype from each ``.npy`` header, sizes declared by the zip compared
    with what the header needs; only then the data, and the CRC is verified at each member's end."""
    from numpy.lib import format as npy

    magic = fh.read(6)
    if not magic:
        raise WeightError(f"{p}: cannot read weights (the file is empty)")
    if magic == npy.MAGIC_PREFIX:
        raise WeightError(f"{p}: cannot read weights (a single .npy array, not an .npz archive of named tensors)")
    if magic[:2] != b"PK":
        raise WeightError(f"{p}: cannot read weights (not an .npz archive: not a zip file)")
    fh.seek(0)
    with zipfile.ZipFile(fh) as zf:
        members = zf.infolist()
        if len(members) > MAX_TENSORS:
            raise WeightError(f"{p}: holds {len(members):,} members, more than {MAX_TENSORS:,}")
        for m in members:
            if not m.filename.endswith(".npy") or m.is_dir():
                raise WeightError(f"{p}: member {m.filename!r} is not an .npy array")
            if m.flag_bits & 0x1:
                raise WeightError(f"{p}: member {m.filename!r} is encrypted")
        members = [m for m in members if not _skipped(m.filename[:-4], skip)]
        _admit_names(p, [m.filename[:-4] for m in members], want)  # before any member is opened
        read: list[_Header] = []
        total = 0
        for m in members:
            name = m.filename[:-4]
            try:
                with zf.open(m) as member:
                    version = npy.read_magic(member)
                    if version == (1, 0):
                        shape, fortran, dtype = npy.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, fortran, dtype = npy.read_array_header_2_0(member)
                    else:
                        raise WeightError(f"{p}: tensor {name!r} is in .npy format {version}, expected 1.0 or 2.0")
                    header_len = member.tell()
            except _READ_ERRORS as exc:
                raise unreadable(p, exc, name) from None
            h = _Header(name, tuple(shape), dtype, bool(fortran), m)
            total = _admit(p, h, want, total, limit)
            if m.file_size != header_len + h.nbytes:  # a zip bomb declares its inflated size here
                raise WeightError(
                    f"{p}: tensor {name!r}: the archive declares {m.file_size:,} bytes, "
                    f"its .npy header {header_len + h.nbytes:,} ({h.shape} {h.dtype})"
                )
            read.append(h)
        data: dict[str, bytes] = {}
        for h in read:
            assert h.member is not None
            try:
                with zf.open(h.member) as member:
                    member.seek(h.member.file_size - h.nbytes)
                    data[h.name] = _read_exact(member, h.nbytes, p, h.name)
                    if member.read(1):  # also makes zipfile compare the CRC
                        raise WeightError(f"{p}: tensor {h.name!r} has data past its end")
            except _READ_ERRORS as exc:
                raise unreadable(p, exc, h.name) from None
    return _finish(p, read, data)


def _load_safetensors(
    p: Path, fh: BinaryIO, want: dict[str, tuple[int, ...]] | None, size: int, skip: Collection[str] = ()
) -> Weights:
    """A .safetensors file, parsed here (no package needed): the header length and the JSON
    header are bounds-checked, and every tensor's byte range must tile the data exactly."""

    if size < 8:
        raise WeightError(f"{p}: is {size} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", fh.read(8))
    if n > min(MAX_SAFETENSORS_HEADER, size - 8):
        raise WeightError(
            f"{p}: not a safetensors file (header length {n:,}; the file has {size - 8:,} bytes after it, "
            f"the limit is {MAX_SAFETENSORS_HEADER:,})"
        )

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise WeightError(f"{p}: the safetensors header names a tensor twice")
        return out

    try:
        meta = json.loads(fh.read(n).decode("utf-8"), object_pairs_hook=unique)
    except RecursionError:  # json recurses once per level of nesting
        raise WeightError(f"{p}: not a safetensors file (the JSON header is nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, WeightError):
            raise
        raise WeightError(f"{p}: not a safetensors file (the header is not JSON: {str(exc)[:120]})") from None
    if not isinstance(meta, dict):
        raise WeightError(f"{p}: not a safetensors file (the header is not a JSON object)")
    meta.pop("__metadata__", None)
    data_len = size - 8 - n
    headers, ranges, skipped = _safetensors_entries(p, meta, 8 + n, skip)
    _admit_names(p, [h.name for h in headers], want)
    total = 0
    for h in headers:
        total = _admit(p, h, want, total, _size_limit(want))
    at = 0
    sizes = [(r, h.nbytes) for r, h in zip(ranges, headers, strict=True)] + [(r, r[1] - r[0]) for r in skipped]
    for (begin, end, name), nbytes in sorted(sizes, key=lambda rn: rn[0][:2]):
        if begin != at or end - begin != nbytes:  # overlapping, gapped or misdeclared
            raise WeightError(
                f"{p}: tensor {name!r}: data_offsets [{begin}, {end}] should be [{at}, {at + nbytes}] "
                "(tensors back to back)"
            )
        at = end
    if at != data_len:
        what = "truncated" if at > data_len else "trailing bytes"
        raise WeightError(f"{p}: the tensors take {at:,} bytes but the file has {data_len:,} after its header ({what})")
    data: dict[str, bytes] = {}
    for h in headers:
        fh.seek(h.start)
        data[h.name] = _read_exact(fh, h.nbytes, p, h.name)
    return _finish(p, headers, data)


def _safetensors_entries(
    p: Path, meta: dict[str, object], data_start: int, skip: Collection[str]
) -> tuple[list[_Header], list[tuple[int, int, str]], list[tuple[int, int, str]]]:
    """Each header entry checked: the tensors read (their headers and byte ranges) and the byte
    ranges of those skipped."""
    import numpy as np

    headers: list[_Header] = []
    ranges: list[tuple[int, int, str]] = []
    skipped: list[tuple[int, int, str]] = []
    for name, entry in meta.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and _int_list(entry.get("shape"))
            and _int_list(entry.get("data_offsets"))
            and len(entry["data_offsets"]) == 2
        ):
            raise WeightError(f"{p}: tensor {name!r}: malformed header entry (needs dtype, shape and data_offsets)")
        begin, end = entry["data_offsets"]
        if _skipped(name, skip):  # its bytes still tile the data; its dtype is not ours to judge
            if end < begin:
                raise WeightError(f"{p}: tensor {name!r}: data_offsets [{begin}, {end}] run backwards")
            skipped.append((begin, end, name))
            continue
        code = entry["dtype"]
        if code not in _SAFETENSORS_DTYPES:
            raise WeightError(f"{p}: tensor {name!r} has dtype {code[:20]}, expected one of F16, F32, F64")
        dtype = np.dtype(_SAFETENSORS_DTYPES[code])
        headers.append(_Header(name, tuple(entry["shape"]), dtype, start=data_start + begin))
        ranges.append((begin, end, name))
    return headers, ranges, skipped


def _int_list(v: object) -> bool:
    """A JSON list of non-negative integers (bools are ints in Python, not here)."""
    return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
