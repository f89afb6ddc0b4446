"""Count the array operations a piece of NumPy code issues: the kernels it would launch on a GPU.

    from benchmarks.opcount import count_array_ops
    ops = count_array_ops(lambda a, b: (a + b).sum(), a, b)     # a, b: NumPy arrays
    ops.total, ops.by_category        # 2, {"ufunc": 1, "reduction": 1, ...}
    print(ops.report())               # and the source lines that issued them

On CuPy every array operation is at least one kernel launch, and a small training step
is bound by the launches, not by the arithmetic. This module counts them on NumPy, on
one thread, with no GPU: while ``fn`` runs, its arrays are a subclass of
``np.ndarray`` (:class:`CountedArray`) that sees every operation, and NumPy's creation
functions are patched to return that subclass (and put back afterwards, whatever happens).

What counts as one operation (a category in brackets):

* a ufunc call [ufunc]: operators (``a + b``, ``-a``, ``a > b``, ``a ** 2``), in-place
  ones (``a += b``), ``np.tanh(a, out=a)``, ``np.maximum``, ``np.clip``;
* a reduction [reduction]: ``sum``, ``max``, ``mean``, ``any``, ``argmax``, ... as
  ``np.<name>`` or as a method; ``mean``, ``var`` and ``std`` count once (one kernel on
  CuPy) although NumPy runs a sum and a division;
* a matrix product [matmul]: ``@``, ``np.matmul`` (``out=`` or not), ``dot``, ``einsum``, ...;
* a copy [copy]: ``astype``, ``copy``, ``ascontiguousarray`` and ``reshape``/``ravel``
  only when they copy, ``concatenate``, ``stack``, ``pad``, ``where``, ``take``,
  ``take_along_axis``, ``repeat``, a gather ``a[index_array]``, a scatter
  (``bincount``, ``np.add.at``) and any other NumPy function that returns new memory;
* a slice assignment [setitem]: ``a[1:] = b``, ``a[...] = 0``, ``a.fill(0)``, ``copyto``.
  Not counted: the write-back of ``a[s] += b`` (Python runs ``t = a[s]; t += b;
  a[s] = t``, and the last assignment is of a view onto itself, which NumPy and CuPy
  both skip: CuPy's ``_scatter_op`` returns on the same pointer, shape and strides); the
  in-place add itself is one ufunc;
* an array creation that writes memory [create]: ``zeros``, ``ones``, ``full``,
  ``arange``, ``linspace``, ``eye``, their ``*_like``, and ``array``/``asarray`` of
  host data (a list, a scalar, an array made outside the count: a host-to-device copy
  on the GPU).

Not counted: views (basic slicing, ``.T``, ``transpose``, ``reshape`` of contiguous
memory, ``broadcast_to``, ``as_strided``), ``asarray`` of an array it does not copy,
and ``empty``/``empty_like``: they write nothing (on CuPy, a memory-pool allocation, no
kernel); they are tallied apart, in ``OpCount.not_counted``. Converting to a Python
number (``float(a)``) is a device sync on the GPU, not a kernel, and is not counted.

A NumPy function counts as one operation whatever NumPy does inside it (``np.pad`` is a
few copies in NumPy, ``np.stack`` a concatenate): its insides run on plain arrays and
are not seen. A reduction that NumPy returns as a scalar comes back here as a 0-d array,
as on CuPy, so the arithmetic that follows it (``sqrt(sum(...))`` in gradient clipping)
is counted as the GPU would run it.

Fused kernels: code that a fused CuPy kernel replaces can be wrapped in
``with counts_as_one("name"):`` (or decorated with ``@counts_as_one("name")``). Inside
it the operations still run and are recorded per line, but they add one operation to
the total, in category [fused], and the report says which NumPy lines that one kernel
stands for (``OpCount.fused``). ``OpCount.unfused_total`` keeps the count with every
NumPy operation separate.

Where: every operation is attributed to the innermost stack frame in the ``stvae_np``
package (file, line, function), else to the innermost frame outside NumPy (a test's
own function): ``OpCount.lines`` is the per-line table, largest first.

The count is of the NumPy code path: where the package branches on the backend
(``backend.scatter_add``: ``bincount`` on NumPy, ``cupyx.scatter_add`` on CuPy), it
counts the NumPy branch. Host-side NumPy work on small constants inside the step (the
blur kernel of ``losses.gaussian_blur``) is counted too: it is visible per line.

One thread: ``fast.layers.over_batch_blocks`` splits its copy loops over threads, which would
multiply their count by the number of blocks; ``fast.layers._CPU_THREADS`` is set to 1 while
counting (one call for the whole batch, as on the GPU). BLAS threads do not change
the count and are left alone. Counting is not thread-safe: one count at a time.

Arrays passed to :func:`count_array_ops`, or made inside it (also by ``setup``), are
counted views; a plain array met inside an operation was made outside the count (its
own operations were not seen), and is tallied in ``OpCount.foreign_inputs``.
"""
from __future__ import annotations

import functools
import linecache
import os
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

CATEGORIES = ("ufunc", "reduction", "matmul", "copy", "setitem", "create", "fused", "other")

import stvae_np
from stvae_np.fast import kernels as fast_kernels, layers as fast_layers

_THIS = os.path.abspath(__file__)
_ORIG_ASARRAY = np.asarray          # NumPy's own, whatever is patched later
_PACKAGE_DIR = os.path.dirname(os.path.abspath(stvae_np.__file__)) + os.sep   # the package counted
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep

_REDUCTIONS = {"sum", "prod", "mean", "average", "median", "std", "var", "max", "min", "amax",
               "amin", "argmax", "argmin", "any", "all", "ptp", "count_nonzero", "nansum",
               "nanmean", "nanmax", "nanmin", "cumsum", "cumprod", "norm", "trace"}
_MATMULS = {"dot", "vdot", "inner", "outer", "tensordot", "einsum", "kron", "matmul"}
_UFUNC_LIKE = {"clip", "round", "around", "nan_to_num", "isclose", "real_if_close"}
_COPIES = {"concatenate", "stack", "hstack", "vstack", "dstack", "column_stack", "pad", "where",
           "take", "take_along_axis", "repeat", "tile", "copy", "ascontiguousarray", "ravel",
           "reshape", "flatten", "bincount", "nonzero", "argwhere", "flatnonzero", "sort",
           "argsort", "unique", "choose", "compress", "extract", "select", "diff", "roll",
           "searchsorted", "astype"}
_WRITES = {"copyto", "put", "place", "putmask", "put_along_axis", "fill_diagonal"}
_CREATES = {"zeros_like", "ones_like", "full_like"}
_NO_WRITE = {"empty_like"}


# ----------------------------------------------------------------------------- the tally
@dataclass
class LineOps:
    """The operations one source line issued."""
    file: str                 # relative to the repository, e.g. "stvae_np/fast/layers.py"
    line: int
    function: str
    count: int = 0
    by_category: Counter = field(default_factory=Counter)
    ops: Counter = field(default_factory=Counter)       # e.g. {"add": 2, "setitem": 1}

    @property
    def source(self):
        path = self.file if os.path.isabs(self.file) else os.path.join(os.path.dirname(_PACKAGE_DIR[:-1]), self.file)
        return linecache.getline(path, self.line).strip()

    @property
    def where(self):
        return f"{self.file}:{self.line}"

    def to_dict(self):
        return {"where": self.where, "function": self.function, "count": self.count,
                "by_category": dict(self.by_category), "ops": dict(self.ops), "source": self.source}


@dataclass
class OpCount:
    """What :func:`count_array_ops` found. ``total`` counts a ``counts_as_one`` region once;
    ``unfused_total`` counts every NumPy operation in it."""
    total: int = 0
    unfused_total: int = 0
    by_category: dict = field(default_factory=lambda: {c: 0 for c in CATEGORIES})
    by_op: Counter = field(default_factory=Counter)
    lines: list = field(default_factory=list)            # LineOps, largest count first
    fused: dict = field(default_factory=dict)            # name -> {"calls", "ops", "lines"}
    not_counted: Counter = field(default_factory=Counter)   # e.g. {"empty": 12}
    foreign_inputs: int = 0
    value: object = None                                 # what fn returned

    def top(self, k=10):
        return self.lines[:k]

    def categories_text(self):
        return ", ".join(f"{c} {n}" for c, n in self.by_category.items()
                         if n or c in CATEGORIES[:6])

    def report(self, top=10, indent="  ", label="array ops"):
        """The total by category, fused kernels, the ``top`` source lines and what was not counted."""
        out = [f"{indent}{label}: {self.total} ({self.categories_text()})"]
        if self.unfused_total != self.total:
            out.append(f"{indent}  {self.unfused_total} NumPy operations before fusion")
        for name, f in self.fused.items():
            where = ", ".join(f"{w} ({n})" for w, n in f["lines"].items())
            out.append(f"{indent}  fused {name}: {f['calls']} kernel(s) standing for {f['ops']} NumPy ops: {where}")
        if top and self.lines:
            shown = self.lines[:top]
            cats = [" ".join(f"{c} {n}" for c, n in ln.by_category.most_common()) for ln in shown]
            w_where = max(len(ln.where) for ln in shown)
            w_fn = max(len(ln.function) for ln in shown)
            w_cat = max(len(c) for c in cats)
            out.append(f"{indent}top {len(shown)} source lines (ops, line, function, kinds, source):")
            for ln, cat in zip(shown, cats):
                out.append(f"{indent}  {ln.count:6d}  {ln.where:{w_where}s}  {ln.function:{w_fn}s}  "
                           f"{cat:{w_cat}s}  {ln.source}")
        if self.not_counted:
            out.append(f"{indent}not counted (write no memory): "
                       + ", ".join(f"{k} {v}" for k, v in self.not_counted.items()))
        if self.foreign_inputs:
            out.append(f"{indent}warning: {self.foreign_inputs} operands were arrays made outside the count")
        return "\n".join(out)

    def to_dict(self, top=10):
        return {"total": self.total, "unfused_total": self.unfused_total,
                "by_category": dict(self.by_category), "by_op": dict(self.by_op.most_common()),
                "top_lines": [ln.to_dict() for ln in self.lines[:top]],
                "fused": self.fused, "not_counted": dict(self.not_counted),
                "foreign_inputs": self.foreign_inputs}


class _State:
    """Module-wide switches. ``active``: NumPy is patched and new arrays are counted;
    ``recording``: operations are tallied; ``depth`` > 0 while NumPy itself runs an
    operation we already counted (its insides are not counted); ``fused``: the stack of
    open ``counts_as_one`` regions."""

    def __init__(self):
        self.active = False
        self.recording = False
        self.depth = 0
        self.fused = []
        self.result = None
        self.lines = {}
        self.files = {}


_STATE = _State()


def _site():
    """(file, line, function) of the innermost package frame, else of the innermost
    frame outside this module and NumPy."""
    f = sys._getframe(2)
    fallback = None
    files = _STATE.files
    while f is not None:
        code = f.f_code
        kind = files.get(code.co_filename)
        if kind is None:
            path = os.path.abspath(code.co_filename)
            if path == _THIS or path.startswith(_NUMPY_DIR) or code.co_filename.startswith("<frozen"):
                kind = ("skip", path)
            elif path.startswith(_PACKAGE_DIR):
                kind = ("package", os.path.relpath(path, os.path.dirname(_PACKAGE_DIR[:-1])))
            else:
                try:
                    rel = os.path.relpath(path, os.path.dirname(_PACKAGE_DIR[:-1]))
                except ValueError:
                    rel = path
                kind = ("other", path if rel.startswith("..") else rel)
            files[code.co_filename] = kind
        if kind[0] == "package":
            return kind[1], f.f_lineno, code.co_name
        if kind[0] == "other" and fallback is None:
            fallback = (kind[1], f.f_lineno, code.co_name)
        f = f.f_back
    return fallback or ("?", 0, "?")


def _record(category, op):
    st = _STATE
    if not st.recording:
        return
    r = st.result
    key = _site()
    ln = st.lines.get(key)
    if ln is None:
        ln = st.lines[key] = LineOps(*key)
    ln.count += 1
    ln.by_category[category] += 1
    ln.ops[op] += 1
    r.unfused_total += 1
    r.by_op[op] += 1
    if st.fused:
        region = st.fused[-1]
        region["ops"] += 1
        region["lines"][f"{key[0]}:{key[1]}"] += 1
        return
    r.total += 1
    r.by_category[category] += 1


def _not_counted(op):
    if _STATE.recording:
        _STATE.result.not_counted[op] += 1


@contextmanager
def _inside():
    _STATE.depth += 1
    try:
        yield
    finally:
        _STATE.depth -= 1


# ----------------------------------------------------------------------------- (un)wrapping
def _plain(x, tally=True):
    """A CountedArray as a plain ndarray view; containers recursively; anything else as is.
    Plain ndarrays met here while recording are tallied as foreign inputs (``tally``)."""
    if isinstance(x, CountedArray):
        return x.view(np.ndarray)
    if type(x) is np.ndarray:
        if tally and _STATE.recording:
            _STATE.result.foreign_inputs += 1
        return x
    if type(x) in (list, tuple):
        return type(x)(_plain(v, tally) for v in x)
    if type(x) is dict:
        return {k: _plain(v, tally) for k, v in x.items()}
    return x


def _wrap(x):
    """Plain results as CountedArray (NumPy scalars as 0-d arrays, as CuPy returns them)."""
    if type(x) is np.ndarray:
        return x.view(CountedArray)
    if isinstance(x, np.generic):
        return _ORIG_ASARRAY(x).view(CountedArray)
    if type(x) in (list, tuple):
        return type(x)(_wrap(v) for v in x)
    return x


def _arrays_in(x, out):
    if isinstance(x, np.ndarray):
        out.append(x)
    elif type(x) in (list, tuple):
        for v in x:
            _arrays_in(v, out)
    elif type(x) is dict:
        for v in x.values():
            _arrays_in(v, out)
    return out


def _is_fresh(result, inputs):
    """True when the result holds an array that shares no memory with any input array."""
    res = _arrays_in(result, [])
    if any(isinstance(x, np.generic) for x in (result if type(result) in (list, tuple) else (result,))):
        return True
    return any(r.size and not any(np.may_share_memory(r, a) for a in inputs) for r in res)


def _is_fancy(index):
    """Whether an index makes NumPy gather (advanced indexing) rather than take a view."""
    items = index if type(index) is tuple else (index,)
    for it in items:
        if isinstance(it, (bool, np.bool_, list)):
            return True
        if isinstance(it, np.ndarray) and (it.ndim > 0 or it.dtype.kind == "b"):
            return True
    return False


def _data_pointer(a):
    return a.__array_interface__["data"][0]


# ----------------------------------------------------------------------------- the array class
class CountedArray(np.ndarray):
    """An ndarray that tallies each operation on it (see the module docstring).
    Outside a count it behaves like a plain ndarray."""

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        args = _plain(inputs)
        kwargs = _plain(kwargs)
        if out is not None:
            kwargs["out"] = _plain(tuple(out))
        with _inside():
            result = getattr(ufunc, method)(*args, **kwargs)
        if method == "at":
            category = "copy"                     # an unbuffered scatter: np.add.at
        elif ufunc is np.matmul or getattr(ufunc, "__name__", "") in ("matmul", "vecdot", "matvec", "vecmat"):
            category = "matmul"
        elif method in ("reduce", "reduceat", "accumulate"):
            category = "reduction"
        else:
            category = "ufunc"
        _record(category, ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}")
        if method == "at":
            return None
        if out is not None:
            if ufunc.nout == 1:
                return out[0] if out[0] is not None else _wrap(result)
            return tuple(o if o is not None else _wrap(r) for o, r in zip(out, result))
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        pargs, pkwargs = _plain(args), _plain(kwargs)
        with _inside():
            result = func(*pargs, **pkwargs)
        if _STATE.recording:
            inputs = _arrays_in(pargs, _arrays_in(pkwargs, []))
            if name in _NO_WRITE:
                _not_counted(name)
            elif name in _WRITES:
                _record("setitem", name)
            elif pkwargs.get("out") is not None or (result is not None and _is_fresh(result, inputs)):
                category = ("reduction" if name in _REDUCTIONS else "matmul" if name in _MATMULS
                            else "ufunc" if name in _UFUNC_LIKE else "copy" if name in _COPIES
                            else "create" if name in _CREATES else "other")
                _record(category, name)
        out = kwargs.get("out")
        if out is not None and result is pkwargs.get("out"):
            return out
        return _wrap(result)

    # -- indexing
    def __getitem__(self, index):
        plain = self.view(np.ndarray)
        pindex = _plain(index)
        with _inside():
            result = plain[pindex]
        if _is_fancy(pindex):
            _record("copy", "gather")
        elif isinstance(result, np.generic):          # one element: a 0-d view, as on CuPy
            with _inside():
                result = plain[(pindex if type(pindex) is tuple else (pindex,)) + (Ellipsis,)]
        return _wrap(result)

    def __setitem__(self, index, value):
        plain = self.view(np.ndarray)
        pindex, pvalue = _plain(index), _plain(value)
        if _STATE.recording:
            self_copy = False
            if isinstance(pvalue, np.ndarray) and not _is_fancy(pindex):
                target = plain[pindex]
                self_copy = (isinstance(target, np.ndarray) and target.shape == pvalue.shape
                             and target.strides == pvalue.strides and target.dtype == pvalue.dtype
                             and _data_pointer(target) == _data_pointer(pvalue))
            if self_copy:
                _not_counted("setitem of a view onto itself")
            else:
                _record("setitem", "setitem" if not _is_fancy(pindex) else "scatter")
        with _inside():
            plain[pindex] = pvalue

    # -- methods that compute without going through a ufunc, or count once
    def fill(self, value):
        _record("setitem", "fill")
        with _inside():
            self.view(np.ndarray).fill(_plain(value))


def _method(name, category, always=True):
    base = getattr(np.ndarray, name)

    @functools.wraps(base)
    def method(self, *args, **kwargs):
        plain = self.view(np.ndarray)
        pargs, pkwargs = _plain(args), _plain(kwargs)
        with _inside():
            result = base(plain, *pargs, **pkwargs)
        if result is plain:                      # astype(copy=False), reshape to the same shape ...
            return self
        if always or kwargs.get("out") is not None or (result is not None and _is_fresh(result, [plain])):
            _record(category, name)
        out = kwargs.get("out")
        if out is not None and result is pkwargs.get("out"):
            return out
        return _wrap(result)
    return method


for _name in ("sum", "prod", "max", "min", "mean", "var", "std", "any", "all", "argmax", "argmin",
              "ptp", "cumsum", "cumprod", "trace"):
    if hasattr(np.ndarray, _name):
        setattr(CountedArray, _name, _method(_name, "reduction"))
for _name, _category, _always in (("dot", "matmul", True), ("clip", "ufunc", True), ("round", "ufunc", True),
                                  ("conj", "ufunc", True), ("copy", "copy", True), ("flatten", "copy", True),
                                  ("astype", "copy", False), ("reshape", "copy", False), ("ravel", "copy", False),
                                  ("repeat", "copy", True), ("take", "copy", True), ("nonzero", "copy", True),
                                  ("argsort", "copy", True), ("compress", "copy", True), ("choose", "copy", True),
                                  ("searchsorted", "copy", True), ("sort", "setitem", True), ("put", "setitem", True),
                                  ("__copy__", "copy", True), ("__deepcopy__", "copy", True)):
    setattr(CountedArray, _name, _method(_name, _category, _always))


# ----------------------------------------------------------------------------- NumPy's own functions
def _creator(orig, name):
    """A creation function (zeros, asarray, ...) that returns counted arrays while active."""
    writes = name not in ("empty", "empty_like")
    converts = name in ("array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray")

    @functools.wraps(orig)
    def create(*args, **kwargs):
        if _STATE.depth or not _STATE.active:
            return orig(*args, **kwargs)
        # plain arrays are expected here: host data coming in
        pargs, pkwargs = _plain(args, tally=False), _plain(kwargs, tally=False)
        with _inside():
            result = orig(*pargs, **pkwargs)
        if converts:
            given = args[0] if args else kwargs.get("object", kwargs.get("a"))
            src = pargs[0] if pargs else pkwargs.get("object", pkwargs.get("a"))
            if type(given) is np.ndarray:
                _record("create", name)              # an array from outside the count: host data
            elif isinstance(src, np.ndarray):
                if result is src:                    # asarray(x) is x
                    return given
                if result.size and np.may_share_memory(result, src):
                    return _wrap(result)             # a view: nothing written
                _record("copy", name)
            elif not isinstance(src, np.generic) and (hasattr(src, "__array_interface__")
                                                      or hasattr(src, "__array_struct__")):
                pass                                 # a view of memory that exists already
            else:
                _record("create", name)              # host data: a host-to-device copy on the GPU
        elif writes:
            _record("create", name)
        else:
            _not_counted(name)
        return _wrap(result)
    return create


def _view_function(orig):
    @functools.wraps(orig)
    def view(*args, **kwargs):
        if _STATE.depth or not _STATE.active:
            return orig(*args, **kwargs)
        with _inside():
            return _wrap(orig(*_plain(args), **_plain(kwargs)))
    return view


_CREATION = ("zeros", "ones", "full", "empty", "arange", "linspace", "eye", "identity", "array",
             "asarray", "asanyarray", "ascontiguousarray", "asfortranarray", "zeros_like", "ones_like",
             "full_like", "empty_like")


def _patches():
    """(module, name, replacement) for every NumPy function patched during a count."""
    import numpy.lib.stride_tricks as stride_tricks
    out = [(np, name, _creator(getattr(np, name), name)) for name in _CREATION]
    out.append((stride_tricks, "as_strided", _view_function(stride_tricks.as_strided)))
    return out


@contextmanager
def instrumented():
    """While open: NumPy's creation functions return :class:`CountedArray`, and
    ``fast.layers._CPU_THREADS`` is 1, and the ops' fused runs count as one
    (``fast.kernels.COUNT_AS_ONE``). Nothing is recorded (see :func:`count_array_ops`).
    Everything is put back on exit, also after an exception."""
    conv = fast_layers
    if _STATE.active:
        raise RuntimeError("count_array_ops: a count is already running (counts do not nest)")
    patches = _patches()
    originals = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    threads = conv._CPU_THREADS
    try:
        for mod, name, new in patches:
            setattr(mod, name, new)
        conv._CPU_THREADS = 1
        fast_kernels.COUNT_AS_ONE = counts_as_one
        _STATE.active = True
        yield
    finally:
        _STATE.active = False
        _STATE.recording = False
        _STATE.fused = []
        conv._CPU_THREADS = threads
        fast_kernels.COUNT_AS_ONE = None
        for mod, name, orig in originals:
            setattr(mod, name, orig)


def counted(x):
    """Arrays (also inside lists, tuples, dicts) as :class:`CountedArray` views; the rest as is."""
    if isinstance(x, np.ndarray) and not isinstance(x, CountedArray):
        return x.view(CountedArray)
    if type(x) in (list, tuple):
        return type(x)(counted(v) for v in x)
    if type(x) is dict:
        return {k: counted(v) for k, v in x.items()}
    return x


def count_array_ops(fn, *args, setup=None, **kwargs):
    """Run ``fn(*args, **kwargs)`` with NumPy instrumented and count the array operations
    it issues (see the module docstring for what counts).

    Args:
        fn: the code to count.
        *args, **kwargs: passed to fn, NumPy arrays in them (also inside lists, tuples,
            dicts) as counted views of the same memory.
        setup: optional callable run first, instrumented but not counted; its return value
            is passed to fn as the first argument. Build models and optimizers here, so
            that their arrays are counted arrays too.
    Returns:
        an :class:`OpCount`; ``fn``'s return value is in ``OpCount.value``.
    """
    result = OpCount()
    with instrumented():
        if setup is not None:
            args = (setup(),) + args
        args, kwargs = counted(args), counted(kwargs)
        _STATE.result, _STATE.lines = result, {}
        _STATE.recording = True
        try:
            value = fn(*args, **kwargs)
        finally:
            _STATE.recording = False
            lines, _STATE.lines, _STATE.result = _STATE.lines, {}, None
    result.lines = sorted(lines.values(), key=lambda ln: (-ln.count, ln.file, ln.line))
    result.by_category = {c: n for c, n in result.by_category.items() if n or c in CATEGORIES[:6]}
    result.value = value
    return result


class counts_as_one:
    """Mark code that one fused kernel runs on the GPU: while counting, the operations
    inside count once in the total (category "fused"); ``OpCount.fused[name]`` records
    the calls, the NumPy operations they stand for and the lines that issued them.
    A context manager and a decorator; costs nothing outside a count."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        st = _STATE
        self._pushed = st.recording
        if st.recording:
            if st.fused:                            # nested: the outer kernel holds it
                entry = st.fused[-1]
            else:
                r = st.result
                entry = r.fused.setdefault(self.name, {"calls": 0, "ops": 0, "lines": Counter()})
                entry["calls"] += 1
                r.total += 1
                r.by_category["fused"] += 1
            st.fused.append(entry)
        return self

    def __exit__(self, *exc):
        if self._pushed and _STATE.fused:
            _STATE.fused.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with counts_as_one(self.name):          # a fresh context per call
                return fn(*args, **kwargs)
        return wrapper
