"""CuPy's ElementwiseKernel and ReductionKernel, run as C++ on the CPU (g++), for tests.

The fused kernels of ``stvae_np/fast/kernels.py`` are CUDA source that only a GPU runs. This
stand-in compiles the same operation string as C++ and calls it on NumPy arrays with
CuPy's calling convention, so that the CUDA bodies and the code that launches them can
be checked against the plain NumPy code on a machine with no GPU:

* arguments: the inputs, then the outputs (all of them given, as kernels.py does);
  type placeholders (``T``, ``S``) take the dtype of the arrays passed for them,
  explicit types (``float64 lr``, ``int64 width``) are cast to;
* non-raw arrays are broadcast together and each is read (``const T &x``) or written
  (``T &y``) at the loop's element; ``i`` is the flat C-order index of that element;
* ``raw`` arrays are indexed by their own flat C-order index (``a[k]``), through their
  strides, like CuPy's ``CArray::operator[](ptrdiff_t)``;
* an input that may share memory with an output is copied first, as CuPy does
  (``_copy_in_args_if_needed``);
* a full ReductionKernel (``axis=None``) maps, reduces from the identity in element
  order and applies the post-map: a 0-d result.

What this cannot show: CUDA-only compile errors (checked separately with NVRTC where
CuPy is installed), the GPU's own rounding (fused multiply-adds, tanh to an ulp or
two), and CuPy behaviour beyond the above. ``tests/test_gpu.py``-style tests on a real
GPU are in ``tests/test_kernels.py``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import types

import numpy as np

_CTYPES = {np.dtype("float32"): "float", np.dtype("float64"): "double", np.dtype("int64"): "long long",
           np.dtype("int32"): "int", np.dtype("bool"): "bool"}
_PRELUDE = """
#include <cmath>
#include <cstddef>
using std::tanh; using std::sqrt; using std::floor; using std::isnan; using std::exp; using std::fabs;
#define __device__
template <typename U> struct RawArray {
  char* data; int ndim; const long long* shape; const long long* strides;
  U& operator[](ptrdiff_t idx) const {
    char* p = data;
    for (int d = ndim - 1; d > 0; --d) { p += strides[d] * (idx % shape[d]); idx /= shape[d]; }
    return *reinterpret_cast<U*>(p + strides[0] * idx);
  }
};
"""
_BUILD_DIR = None


def available():
    return shutil.which("g++") is not None


def _compile(source):
    global _BUILD_DIR
    if _BUILD_DIR is None:
        _BUILD_DIR = tempfile.mkdtemp(prefix="stvae_cpu_kernels_")
    key = hashlib.sha1(source.encode()).hexdigest()[:16]
    lib = os.path.join(_BUILD_DIR, f"k_{key}.so")
    if not os.path.exists(lib):
        src = os.path.join(_BUILD_DIR, f"k_{key}.cpp")
        with open(src, "w") as fh:
            fh.write(source)
        subprocess.run(["g++", "-O1", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off",
                        "-o", lib, src], check=True, capture_output=True, text=True)
    return ctypes.CDLL(lib)


def _params(text, is_input):
    out = []
    for item in text.split(","):
        words = item.split()
        if not words:
            continue
        raw = words[0] == "raw"
        typ, name = words[-2], words[-1]
        out.append(types.SimpleNamespace(name=name, type=typ, raw=raw, is_input=is_input))
    return out


def _c_type(typ, typemap):
    if typ in typemap:
        return typemap[typ]
    return _CTYPES[np.dtype(typ)]


class ElementwiseKernel:
    """``cupy.ElementwiseKernel(in_params, out_params, operation, name, preamble=...)`` on NumPy."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="", **kwargs):
        self.in_params = _params(in_params, True)
        self.out_params = _params(out_params, False)
        self.params = self.in_params + self.out_params
        self.operation, self.name, self.preamble = operation, name, preamble
        self.calls = 0

    def _typemap(self, args):
        typemap = {}
        for p, a in zip(self.params, args):
            if len(p.type) == 1 and isinstance(a, np.ndarray) and p.type not in typemap:
                typemap[p.type] = _CTYPES[a.dtype]
        return typemap

    def __call__(self, *args):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(self.params)} arguments expected, got {len(args)}")
        args = list(args)
        outs = [a for p, a in zip(self.params, args) if not p.is_input]
        for k, (p, a) in enumerate(zip(self.params, args)):
            if p.is_input and isinstance(a, np.ndarray) and any(
                    a is not o and np.may_share_memory(a, o) for o in outs):
                args[k] = a.copy()
        typemap = self._typemap(args)
        for p, a in zip(self.params, args):        # arrays of a placeholder agree, as CuPy checks
            if isinstance(a, np.ndarray) and len(p.type) != 1 and a.dtype != np.dtype(p.type):
                raise TypeError(f"{self.name}: {p.name} is {a.dtype}, declared {p.type}")
            if isinstance(a, np.ndarray) and len(p.type) == 1 and _CTYPES[a.dtype] != typemap[p.type]:
                raise TypeError(f"{self.name}: {p.name} is {a.dtype}, {p.type} is {typemap[p.type]}")
        arrays = [(p, a) for p, a in zip(self.params, args) if isinstance(a, np.ndarray) and not p.raw]
        if not arrays:
            raise ValueError(f"{self.name}: loop size is undecided")
        shape = np.broadcast_shapes(*(a.shape for _, a in arrays))
        for p, a in arrays:
            if not p.is_input and a.shape != shape:
                raise ValueError(f"{self.name}: output {p.name} has shape {a.shape}, loop {shape}")
        ndim = max(len(shape), 1)
        size = int(np.prod(shape)) if shape else 1

        ptrs, strides, rshape, rstrides, scalars = [], [], [], [], []
        decls = []
        for p, a in zip(self.params, args):
            ctype = _c_type(p.type, typemap)
            const = "const " if p.is_input else ""
            if isinstance(a, np.ndarray) and p.raw:
                k = len(ptrs)
                ptrs.append(a.ctypes.data)
                strides.append([0] * ndim)
                r0 = len(rshape)
                rshape += list(a.shape) or [1]
                rstrides += list(a.strides) or [0]
                decls.append(f"RawArray<{ctype}> {p.name}{{data[{k}], {max(a.ndim, 1)}, rshape + {r0}, "
                             f"rstrides + {r0}}};")
            elif isinstance(a, np.ndarray):
                k = len(ptrs)
                view = np.broadcast_to(a, shape)
                ptrs.append(a.ctypes.data)
                strides.append(list(view.strides) or [0])
                decls.append(f"{const}{ctype} &{p.name} = *reinterpret_cast<{ctype}*>(data[{k}] + off[{k}]);")
            else:
                k = len(scalars)
                scalars.append(float(a))
                decls.append(f"const {ctype} {p.name} = ({ctype})scal[{k}];")
        n_arr = max(len(ptrs), 1)
        typedefs = "".join(f"typedef {c} {t};\n" for t, c in sorted(typemap.items()))
        source = (_PRELUDE + typedefs + self.preamble
                  + f'\nextern "C" void run(char** data, const long long* st, const long long* shape, '
                  f"int ndim, long long size, const double* scal, const long long* rshape, "
                  f"const long long* rstrides) {{\n"
                  f"  for (ptrdiff_t i = 0; i < size; ++i) {{\n"
                  f"    ptrdiff_t off[{n_arr}] = {{0}};\n"
                  f"    ptrdiff_t rem = i;\n"
                  f"    for (int d = ndim - 1; d >= 0; --d) {{\n"
                  f"      ptrdiff_t k = rem % shape[d]; rem /= shape[d];\n"
                  f"      for (int a = 0; a < {len(ptrs)}; ++a) off[a] += k * st[a * ndim + d];\n"
                  f"    }}\n    "
                  + "\n    ".join(decls) + "\n    {\n" + self.operation + "\n    }\n  }\n}\n")
        lib = _compile(source)
        i64 = ctypes.POINTER(ctypes.c_longlong)

        def buf(values, ctype):
            arr = (ctype * max(len(values), 1))(*values)
            return arr

        lib.run(buf(ptrs, ctypes.c_void_p), buf([s for row in strides for s in row], ctypes.c_longlong),
                buf(list(shape) or [1], ctypes.c_longlong), ctypes.c_int(ndim), ctypes.c_longlong(size),
                buf(scalars, ctypes.c_double), buf(rshape, ctypes.c_longlong),
                buf(rstrides, ctypes.c_longlong))
        del i64
        self.calls += 1
        outs = [a for p, a in zip(self.params, args) if not p.is_input]
        return outs[0] if len(outs) == 1 else tuple(outs)


class ReductionKernel:
    """``cupy.ReductionKernel(in, out, map, reduce, post, identity, name)``, reducing every
    axis (``axis=None``): a 0-d result."""

    def __init__(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                 name="reduce_kernel", **kwargs):
        self.in_params = _params(in_params, True)
        self.out_params = _params(out_params, False)
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
        self.identity, self.name = identity, name
        self.calls = 0

    def __call__(self, *args):
        (p,), (q,) = self.in_params, self.out_params
        (x,) = args
        typemap = {p.type: _CTYPES[x.dtype]} if len(p.type) == 1 else {}
        ctype = _c_type(p.type, typemap)
        out_ctype = _c_type(q.type, typemap)
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty((), dtype=np.dtype({"float": np.float32, "double": np.float64}[out_ctype]))
        typedefs = "".join(f"typedef {c} {t};\n" for t, c in sorted(typemap.items()))
        source = (_PRELUDE + typedefs
                  + f'extern "C" void run(const {ctype}* data, long long size, {out_ctype}* result) {{\n'
                  f"  {ctype} acc = ({ctype})({self.identity});\n"
                  f"  for (long long k = 0; k < size; ++k) {{\n"
                  f"    const {ctype} {p.name} = data[k];\n"
                  f"    {ctype} a = acc, b = ({self.map_expr});\n"
                  f"    acc = ({self.reduce_expr});\n  }}\n"
                  f"  {ctype} a = acc;\n  {out_ctype} &{q.name} = *result;\n  {self.post_map_expr};\n}}\n")
        lib = _compile(source)
        lib.run(ctypes.c_void_p(flat.ctypes.data), ctypes.c_longlong(flat.size),
                ctypes.c_void_p(out.ctypes.data))
        self.calls += 1
        return out


def fake_cupy():
    """A stand-in for the ``cupy`` module as kernels.py's builders use it."""
    return types.SimpleNamespace(ElementwiseKernel=ElementwiseKernel, ReductionKernel=ReductionKernel)


def fake_xp():
    """A module that is NumPy in all but identity: kernels.py takes it for CuPy."""
    module = types.ModuleType("fake_cupy")
    module.__getattr__ = lambda name: getattr(np, name)
    return module
