"""Reading the tensors an evaluation callback sees (``cb_eval``, llama-imatrix's hook).

llama.cpp calls the callback for every node of the graph, first asking whether it wants the node's
data (``ask``), then with the computed tensor. `check_layout` verifies once that our
`binding.Tensor` matches ggml's struct; `array` and `array_i32` copy a tensor's data out as numpy
(from a host buffer directly, from a GPU buffer through ``ggml_backend_tensor_get``);
`op_name` and `weight_name` name what is computed.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from edge_llm.llama.binding import EVAL_CALLBACK, Tensor, lib

__all__ = [
    "EVAL_CALLBACK",
    "Tensor",
    "array",
    "array_i32",
    "check_layout",
    "op_name",
    "weight_name",
    "LayoutError",
]


class LayoutError(RuntimeError):
    """The installed llama.cpp lays out ggml_tensor differently from `binding.Tensor`."""


def check_layout(ptr: int, t: Tensor) -> None:
    g = lib()
    name_at = ptr + Tensor.name.offset
    ok = g.ggml_get_name(ptr) == name_at and (g.ggml_get_data(ptr) or 0) == (t.data or 0)
    if ok and t.ne[0] > 0:
        ok = g.ggml_nrows(ptr) == t.ne[1] * t.ne[2] * t.ne[3]
    if not ok:
        raise LayoutError(
            "this llama.cpp build lays out ggml_tensor differently from the one edge-llm was "
            "written for; reinstall the pinned llama-cpp-python (make install)"
        )


@functools.cache
def op_name(op: int) -> str:
    return lib().ggml_op_name(op).decode()


def weight_name(raw: bytes) -> str:
    """Strip a backend's decoration: ``CUDA0#blk.0.attn_k.weight#0`` -> ``blk.0.attn_k.weight``."""
    name = raw.decode(errors="replace")
    if "#" in name:
        name = name.split("#")[1]
    return name


def array(t: Tensor, ptr: int) -> np.ndarray:
    """An F32 tensor's data as a numpy array [ne3, ne2, ne1, ne0] (a copy)."""
    g = lib()
    shape = tuple(int(t.ne[i]) for i in (3, 2, 1, 0))
    strides = tuple(int(t.nb[i]) for i in (3, 2, 1, 0))
    extent = sum((n - 1) * s for n, s in zip(shape, strides)) + 4
    if g.ggml_backend_buffer_is_host(t.buffer):
        raw = (ctypes.c_char * extent).from_address(t.data)
        base = np.frombuffer(raw, dtype=np.uint8)
    else:  # a GPU buffer: copy it out (llama-imatrix does the same)
        nbytes = g.ggml_nbytes(ptr)
        base = np.empty(max(nbytes, extent), dtype=np.uint8)
        g.ggml_backend_tensor_get(ptr, base.ctypes.data, 0, nbytes)
    view = np.lib.stride_tricks.as_strided(base.view(np.float32)[:1], shape, strides)
    return np.array(view, dtype=np.float32)


def array_i32(t: Tensor, ptr: int) -> np.ndarray:
    """A 2-D I32 tensor's data (expert ids) as a numpy array [ne1, ne0] (a copy)."""
    g = lib()
    n1, n0 = int(t.ne[1]), int(t.ne[0])
    nbytes = g.ggml_nbytes(ptr)
    buf = np.empty(nbytes, dtype=np.uint8)
    g.ggml_backend_tensor_get(ptr, buf.ctypes.data, 0, nbytes)
    view = np.lib.stride_tricks.as_strided(
        buf.view(np.int32)[:1], (n1, n0), (int(t.nb[1]), int(t.nb[0]))
    )
    return np.array(view)
