"""Writing recorded chunks to disk without the kernel's copy: ``O_DIRECT`` ``.npy`` files.

A buffered ``write()`` of a 32 MiB chunk copies it into the page cache: ~45 ms of CPU on the
2-core test VM (~0.7 GB/s), 1.5 ms per recorded step of a 784-256-256-10 MLP's weights, taken
from a training step of 5.4 ms — the writer thread and PyTorch's two intra-op threads share
two cores. Written with ``O_DIRECT`` the disk reads the chunk straight from the buffer (DMA):
~2 ms of CPU per chunk, and the write goes at the disk's own rate.

``O_DIRECT`` needs page-aligned memory, offsets and lengths, so:

- :func:`aligned_empty` allocates chunk buffers from anonymous ``mmap`` memory (page-aligned,
  rounded up to whole pages);
- :func:`write_npy` writes a ``.npy`` file whose header is padded to one page (a valid NPY
  1.0 header: ``np.load`` and memory-mapping read it as any other), then the rows, rounded up
  to whole pages from the buffer, and truncates the file to its true size.

Where ``O_DIRECT`` is refused (tmpfs before Linux 6.6, macOS, a file system without it, a
buffer that is not from :func:`aligned_empty`) the same bytes are written through the page
cache. Either way the file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

import numpy as np
import torch

PAGE = 4096
MAGIC = b"\x93NUMPY\x01\x00"  # NPY format 1.0: a 2-byte header length


def aligned_empty(rows: int, width: int, dtype: torch.dtype) -> tuple[torch.Tensor, mmap.mmap]:
    """An uninitialised ``rows × width`` CPU tensor in page-aligned memory whose allocation
    is a whole number of pages, and that memory (what :meth:`DirectWriter.write_npy` needs to
    write rows of it directly)."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = rows * width * itemsize
    size = max(PAGE, -(-nbytes // PAGE) * PAGE)
    private = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}
    memory = mmap.mmap(-1, size, **private)  # not shared with a forked child (Python's default)
    flat = torch.frombuffer(memory, dtype=torch.uint8)  # keeps the mapping alive
    return flat[:nbytes].view(dtype).view(rows, width), memory


def npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A one-page NPY 1.0 header for a C-ordered array."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": tuple(shape)})  # fmt: skip
    room = PAGE - len(MAGIC) - 2
    body = text.ljust(room - 1).encode("latin1") + b"\n"
    return MAGIC + room.to_bytes(2, "little") + body


def _direct_view(values: np.ndarray, memory: mmap.mmap) -> memoryview | None:
    """The whole pages of ``memory`` (from :func:`aligned_empty`) holding ``values`` from its
    start, if ``values`` starts a page there and the pages lie inside it."""
    if not values.flags.c_contiguous or values.ctypes.data % PAGE:
        return None
    start = values.ctypes.data - np.frombuffer(memory, dtype=np.uint8).ctypes.data
    length = -(-values.nbytes // PAGE) * PAGE
    if start < 0 or start + length > len(memory):
        return None
    return memoryview(memory)[start : start + length]


class DirectWriter:
    """Writes ``.npy`` files with ``O_DIRECT`` where the file system takes it; remembers a
    refusal (one failed attempt per writer, then the page cache)."""

    def __init__(self) -> None:
        self.direct = hasattr(os, "O_DIRECT")
        self._header = mmap.mmap(-1, PAGE)  # page-aligned memory for the header page

    def write_npy(self, path: Path, values: np.ndarray, memory: mmap.mmap | None = None) -> None:
        """Write ``values`` as ``path`` (under a temporary name, then renamed); directly when
        they lie in ``memory`` from :func:`aligned_empty`."""
        tmp = path.with_name(path.name + ".tmp")
        header = npy_header(values.dtype, values.shape)
        view = _direct_view(values, memory) if self.direct and memory is not None else None
        try:
            if view is None or not self._try_direct(tmp, header, view, values.nbytes):
                with open(tmp, "wb") as f:
                    f.write(header)
                    f.write(memoryview(np.ascontiguousarray(values)).cast("B"))
            os.replace(tmp, path)
        except OSError as exc:  # e.g. ENOSPC from write(): name the file
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror, str(path)) from exc

    def _try_direct(self, tmp: Path, header: bytes, view: memoryview, nbytes: int) -> bool:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        except OSError as exc:  # EINVAL: this file system has no O_DIRECT
            return self._refused(exc)
        try:
            self._header[:] = header
            _write_all(fd, memoryview(self._header))
            _write_all(fd, view)
            os.ftruncate(fd, PAGE + nbytes)  # the last page was written whole
            return True
        except OSError as exc:  # EINVAL: e.g. a block size above a page
            return self._refused(exc)
        finally:
            os.close(fd)

    def _refused(self, exc: OSError) -> bool:
        """``O_DIRECT`` refused (EINVAL): use the page cache from now on. Anything else (a
        full disk, an I/O error) is the write's own failure and is raised."""
        if exc.errno != errno.EINVAL:
            raise exc
        self.direct = False
        return False


def _write_all(fd: int, data: memoryview) -> None:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])
