"""The GPU path, proven where no GPU is present: static checks on the source.

One code path serves NumPy and CuPy (``xp = get_array_module(x)``), so a GPU bug is
usually one of three things, and all three can be found without a GPU:

1. an ``xp.<name>`` that NumPy has and CuPy lacks (AttributeError on the first GPU run);
2. a NumPy call on a model array (``np.zeros(shape)`` instead of ``xp.zeros_like``: on the
   GPU a host array, a silent device copy, or a TypeError);
3. a hidden device sync inside the training step (``float(a)``, ``a.item()``, ``a.get()``):
   correct, but the GPU waits for every kernel before it can go on.

CuPy imports without a GPU, so check 1 runs wherever the GPU extra is installed
(``pip install -r requirements-gpu.txt``). In CI, or wherever a CuPy distribution is
installed, a failing ``import cupy`` is an error; elsewhere those tests skip.
Checks 2 and 3 read the source with ``ast`` and need nothing.

The numerical GPU-against-CPU tests are in ``tests/test_gpu.py``.
"""
from __future__ import annotations

import ast
import importlib.metadata
import inspect
import os
import re
from pathlib import Path

import numpy as np
import pytest

import stvae_np
from stvae_np import backend

PACKAGE_DIR = Path(stvae_np.__file__).resolve().parent


def _module_name(path):
    """stvae_np/fast/layers.py -> "fast.layers"; stvae_np/model.py -> "model"."""
    return ".".join(path.relative_to(PACKAGE_DIR).with_suffix("").parts)


# every module of the package, its subpackages included ("fast.layers", "fast.memory", ...)
MODULES = sorted(_module_name(p) for p in PACKAGE_DIR.rglob("*.py")
                 if p.stem != "__init__" and "__pycache__" not in p.parts)

# the modules that compute on model arrays: no NumPy, no CuPy, only xp (the plain ops and
# the fast ones the model runs; losses.py imports NumPy for a host-side kernel, and is
# checked with model.py below, function by function)
OPS_MODULES = ("activations", "layers", "memory", "fast.layers", "fast.memory", "sampler",
               "optim", "metrics")


def _path(module):
    """"fast.layers" -> "fast/layers.py" (relative to the package)."""
    return module.replace(".", "/") + ".py"


def _source(module):
    return (PACKAGE_DIR / _path(module)).read_text(encoding="utf-8")


def _tree(module):
    return ast.parse(_source(module), filename=f"stvae_np/{_path(module)}")


# ----------------------------------------------------------------------------- CuPy
def _cupy_distribution():
    """Name of an installed CuPy distribution (cupy-cuda12x, ...), or None."""
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if re.fullmatch(r"cupy(-cuda\d+x?|-rocm-[\w-]+)?", name):
            return name
    return None


def _in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _cupy():
    """Import CuPy (and cupyx), or fail (CI, or CuPy installed but broken), or skip."""
    try:
        import cupy
        import cupyx  # noqa: F401  (backend.scatter_add uses it)
    except Exception as err:  # ImportError, or a broken CUDA install raising anything
        dist = _cupy_distribution()
        if _in_ci() or dist is not None:
            pytest.fail(f"`import cupy` failed ({type(err).__name__}: {err}); "
                        f"{'CI installs' if _in_ci() else f'{dist} is installed and'} the GPU extra "
                        f"(requirements-gpu.txt), which must import even without a GPU")
        pytest.skip("CuPy is not installed (the GPU extra: pip install -r requirements-gpu.txt); "
                    "the check that every xp.<name> exists in CuPy needs it")
    return cupy


# ----------------------------------------------------------------------------- xp names
def _attribute_chain(node):
    """``a.b.c`` -> ("a", "b", "c") when the chain is made of names only, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return tuple(reversed(parts))
    return None


def _chains(root_names):
    """Every maximal attribute chain ``<root>.<a>[.<b>...]`` in the package.

    Returns ``{root: {("a", "b"): [(module, line), ...]}}`` (the chain without its root).
    Method calls on arrays (``x.reshape``) have an array, not a root, at their base and
    are out of scope. ``self.xp.<name>`` and ``model.xp.<name>`` count as ``xp.<name>``.
    """
    found = {root: {} for root in root_names}
    for module in MODULES:
        tree = _tree(module)
        inner = set()   # Attribute nodes that are the .value of another Attribute
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                inner.add(id(node.value))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or id(node) in inner:
                continue
            chain = _attribute_chain(node)
            if chain is None:
                continue
            for i, part in enumerate(chain[:-1]):      # xp.<...>, self.xp.<...>
                if part in root_names and (i == 0 or part == "xp"):
                    rest = chain[i + 1:]
                    found[part].setdefault(rest, []).append((module, node.lineno))
                    break
    return found


def _resolve(module, chain):
    obj = module
    for part in chain:
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def _where(places):
    return ", ".join(f"stvae_np/{_path(m)}:{line}" for m, line in places[:3]) + \
        (f" (+{len(places) - 3} more)" if len(places) > 3 else "")


XP_NAMES = _chains(("xp",))["xp"]


def test_the_package_uses_xp_at_all():
    """Guard for the scanner itself: the names every op needs are found."""
    names = {".".join(c) for c in XP_NAMES}
    assert {"zeros", "concatenate", "take_along_axis", "where", "tanh"} <= names, sorted(names)


def test_the_scanner_reads_every_module():
    """Guard for the module discovery: the subpackage's modules are read too, and every
    module the checks below name exists (a renamed file must not drop out of a check)."""
    assert {"fast.layers", "fast.memory", "fast.kernels", "layers", "memory", "model",
            "losses", "checkpoint", "backend"} <= set(MODULES), MODULES
    named = set(OPS_MODULES) | set(HOST_NUMPY_ALLOWED) | {"fast.kernels"}
    assert named <= set(MODULES), f"the tables name modules that do not exist: {sorted(named - set(MODULES))}"
    fast_xp = {m for c, places in XP_NAMES.items() for m, _ in places if m.startswith("fast.")}
    assert {"fast.layers", "fast.memory"} <= fast_xp, f"no xp.<name> found in the fast ops: {fast_xp}"


def test_every_xp_name_exists_in_numpy():
    missing = {".".join(c): _where(p) for c, p in XP_NAMES.items() if _resolve(np, c) is None}
    assert not missing, f"xp.<name> missing from NumPy: {missing}"


def test_every_xp_name_exists_in_cupy():
    """Every ``xp.<name>`` (and ``xp.<a>.<b>`` chain) the package uses exists in CuPy."""
    cupy = _cupy()
    missing = {".".join(c): _where(p) for c, p in XP_NAMES.items() if _resolve(cupy, c) is None}
    assert not missing, (f"these xp.<name> exist in NumPy but not in CuPy {cupy.__version__}, "
                         f"so the GPU path would raise AttributeError: {missing}")


def _keyword_calls():
    """{(chain, keyword): [(module, line)]} for every ``xp.<name>(..., keyword=...)``."""
    calls = {}
    for module in MODULES:
        for node in ast.walk(_tree(module)):
            if not isinstance(node, ast.Call) or not node.keywords:
                continue
            chain = _attribute_chain(node.func)
            if not chain or len(chain) < 2 or chain[0] != "xp":
                continue
            for kw in node.keywords:
                if kw.arg is not None:
                    calls.setdefault((chain[1:], kw.arg), []).append((module, node.lineno))
    return calls


def test_xp_keyword_arguments_are_accepted_by_cupy():
    """``xp.f(..., kw=...)``: CuPy's ``f`` takes ``kw`` too (where its signature is visible;
    ufuncs, which are compiled, are skipped)."""
    cupy = _cupy()
    bad = {}
    for (chain, kw), places in _keyword_calls().items():
        fn = _resolve(cupy, chain)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        if kw in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        bad[f"xp.{'.'.join(chain)}({kw}=...)"] = _where(places)
    assert not bad, f"CuPy rejects these keyword arguments: {bad}"


def test_direct_cupy_names_exist():
    """Names CuPy directly: backend.py (``_cp.<...>``, ``_cupyx.<...>``) and tools that
    import ``cupy`` for timing or device queries (``cupy.<...>``)."""
    cupy = _cupy()
    import cupyx
    found = _chains(("_cp", "_cupyx", "cupy"))
    assert found["_cp"] and found["_cupyx"], "the scanner found no _cp./_cupyx. use in backend.py"
    missing = {f"{root}.{'.'.join(c)}": _where(p) for root in ("_cp", "cupy")
               for c, p in found[root].items() if _resolve(cupy, c) is None}
    missing.update({f"_cupyx.{'.'.join(c)}": _where(p) for c, p in found["_cupyx"].items()
                    if _resolve(cupyx, c) is None})
    assert not missing, f"missing from CuPy {cupy.__version__}: {missing}"


def test_backend_with_cupy_installed_and_no_gpu():
    """With CuPy importable, backend takes CuPy's get_array_module; NumPy arrays stay NumPy,
    and the absence of a GPU is an answer (False, RuntimeError), not a crash."""
    cupy = _cupy()
    assert backend._cp is cupy, "backend did not pick up the installed CuPy"
    a = np.arange(6.0, dtype=np.float32)
    assert backend.get_array_module(a) is np
    assert backend.get_array_module(a, np.ones(2)) is np
    assert backend.get_array_module() is np
    assert backend.device_of(a) == "cpu"
    assert isinstance(backend.gpu_available(), bool)
    assert backend.asnumpy(a) is a or np.array_equal(backend.asnumpy(a), a)
    out = backend.scatter_add(np.zeros(3, np.float32), np.array([0, 2, 2]),
                              np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_array_equal(out, [1, 0, 5])
    if not backend.gpu_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            backend.to_device(a, "gpu")


# ----------------------------------------------------------------------------- no NumPy on model arrays
def _imports(tree):
    """[(top-level module name, line)] of every import statement."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], node.lineno))
    return out


def _import_source(module, node):
    """The package module an ``ImportFrom`` in ``module`` reads from, relative imports
    resolved ("fast.layers"; "" for the package itself), or None outside the package."""
    if node.level:
        package = module.split(".")[:-1]                 # "fast.memory" -> ["fast"]
        if node.level - 1 > len(package):
            return None
        parts = package[:len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
    elif node.module and (node.module == "stvae_np" or node.module.startswith("stvae_np.")):
        parts = node.module.split(".")[1:]
    else:
        return None
    return ".".join(parts)


def _package_imports(module, tree):
    """[(package module, local name, imported name or None, line)] of every import of the
    package's own code in ``module``: ``from .fast import kernels`` gives ("fast.kernels",
    "kernels", None), ``from .layers import im2col`` gives ("layers", "im2col", "im2col")."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _import_source(module, node)
            if source is None:
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}" if source else alias.name
                local = alias.asname or alias.name
                if full in MODULES:                          # from . import metrics as M
                    out.append((full, local, None, node.lineno))
                else:                                        # from .layers import conv2d_forward
                    out.append((source, local, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:                         # import stvae_np.fast.kernels as k
                if alias.name.startswith("stvae_np.") and alias.asname:
                    out.append((alias.name[len("stvae_np."):], alias.asname, None, node.lineno))
    return out


# the modules allowed to import NumPy (never CuPy), and in them the only functions allowed
# to call it, each host-side and none on a model array in a step; every other function of
# these modules is held to the op modules' rule (xp only)
HOST_NUMPY_ALLOWED = {
    "model": {
        "Config.num_params": "np.prod over parameter shapes (Python ints)",
        "init_params": "initialisation on the host from np.random.default_rng, then to_device",
        "STVAE.__init__": "np.dtype(dtype): metadata, not an array",
        "check_clip": "np.dtype of the input, and np.isfinite on a *host* clip before its copy",
    },
    # losses.py was an op module (no NumPy at all) until the photometric term moved in from
    # model.py (STVAE._blur): it is held to model.py's rule now, not dropped from the check
    "losses": {
        "gaussian_blur": "the Gaussian kernel, built on the host from σ (a Python number), "
                         "then xp.asarray (was STVAE._blur)",
    },
    # checkpoints are host-side I/O (like data.py), moved out of model.py (STVAE.save/load):
    # the rest of checkpoint.py is still held to xp
    "checkpoint": {
        "save": "host copies (asnumpy) written with np.savez (was STVAE.save)",
        "load": "np.load of a checkpoint, on the host before .to(device) (was STVAE.load)",
    },
}


@pytest.mark.parametrize("module", OPS_MODULES + tuple(HOST_NUMPY_ALLOWED))
def test_model_code_imports_no_array_library_but_through_backend(module):
    """The op modules compute only through ``xp``: they import neither NumPy nor CuPy.
    model.py, losses.py and checkpoint.py may import NumPy (host-side helpers, checked
    below) but not CuPy. (Tools such as benchmarks/bench.py may import CuPy for timing;
    they compute nothing, and are not in the package.)"""
    forbidden = ("cupy", "cupyx") if module in HOST_NUMPY_ALLOWED else ("numpy", "cupy", "cupyx")
    bad = [(name, line) for name, line in _imports(_tree(module)) if name in forbidden]
    assert not bad, "; ".join(f"stvae_np/{_path(module)}:{line} imports {name}: use "
                              f"xp = get_array_module(x) (and backend.to_device) instead"
                              for name, line in bad)


# fast/kernels.py: NumPy only on the host, in these functions; CuPy only inside _cupy()
KERNELS_NUMPY_ALLOWED = {
    "wanted": "`get_array_module(a) is not np`: which module, no array made",
    "_kernel_for": "np.dtype (metadata) and `xp is np`: NumPy runs the plain code",
    "_self_check": "np.random.default_rng: the check's inputs are drawn on the host",
    "_difference": "the check's comparison, on host copies (asnumpy)",
    "_sample_lstm_gates_backward": "np.concatenate of host random numbers, then xp.asarray",
    "_sample_bilinear_weights": "np.nan / np.inf written into host random numbers, then xp.asarray",
}

# what fast/kernels.py must not import: the op files (each op imports the kernels and hands
# itself to launch(); an import back would be a cycle, and the kernels would stop being
# checked against code they do not own), and the benchmark tools (not in the package)
KERNELS_MUST_NOT_IMPORT = set(OPS_MODULES) | {"losses", "model"}


def test_kernels_imports_cupy_only_in_its_builder_and_numpy_only_on_the_host():
    """fast/kernels.py holds the only CuPy-specific code of the ops (fused kernels):
    ``import cupy`` only inside ``_cupy()`` (so that the module imports without CuPy), and
    ``np.`` only in host-side helpers of the first-use check."""
    tree = _tree("fast.kernels")
    top_level = _imports(ast.Module(body=[node for node in tree.body
                                          if isinstance(node, (ast.Import, ast.ImportFrom))],
                                    type_ignores=[]))
    bad = [(name, line) for name, line in top_level if name in ("cupy", "cupyx")]
    assert not bad, f"fast/kernels.py imports CuPy at module level: {bad}"
    builders = {qual for qual, fn in _functions(tree)
                if any(name in ("cupy", "cupyx") for name, _ in _imports(fn))}
    assert builders == {"_cupy"}, f"CuPy imported outside _cupy(): {sorted(builders - {'_cupy'})}"
    uses = _name_uses(tree, "np")
    bad = {qual: lines for qual, lines in uses.items()
           if qual not in KERNELS_NUMPY_ALLOWED and qual != "<module>"}
    assert not bad, ("np. used in fast/kernels.py outside the host-side helpers (use xp, or add "
                     "the function to KERNELS_NUMPY_ALLOWED with the reason): "
                     + "; ".join(f"stvae_np/fast/kernels.py:{lines} in {q}()" for q, lines in bad.items()))
    stale = sorted(set(KERNELS_NUMPY_ALLOWED) - set(uses))
    assert not stale, f"KERNELS_NUMPY_ALLOWED lists functions that no longer use np.: {stale}"


def test_kernels_imports_no_op_file_and_no_benchmark_tool():
    """fast/kernels.py imports none of the op files (plain or fast) and nothing of
    ``benchmarks/`` (opcount sets ``COUNT_AS_ONE`` from outside): the ops call
    ``kernels.launch("name", op, *args)``, never the other way round."""
    tree = _tree("fast.kernels")
    ops = sorted({(source, line) for source, _, _, line in _package_imports("fast.kernels", tree)
                  if source in KERNELS_MUST_NOT_IMPORT})
    assert not ops, "; ".join(f"stvae_np/fast/kernels.py:{line} imports stvae_np.{m}" for m, line in ops)
    tools = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [alias.name for alias in node.names]
        elif isinstance(node, ast.Call):                     # importlib.import_module("..."), __import__
            chain = _attribute_chain(node.func) or ()
            if chain[-1:] in (("import_module",), ("__import__",)):
                names = ["<dynamic import>"]
        tools += [(name, node.lineno) for name in names
                  if name == "<dynamic import>" or "benchmarks" in name.split(".")
                  or any(part in ("bench", "opcount") for part in name.split("."))]
    assert not tools, f"fast/kernels.py imports benchmark tools (or imports dynamically): {tools}"


def _functions(tree):
    """Yield (qualified name, FunctionDef) for top-level functions and class methods."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{node.name}.{item.name}", item


def _name_uses(tree, name):
    """{enclosing qualified function name or "<module>": [lines]} of every use of ``name``."""
    inside = {}
    for qual, fn in _functions(tree):
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and node.id == name:
                inside.setdefault(qual, []).append(node.lineno)
    all_lines = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == name]
    counted = {line for lines in inside.values() for line in lines}
    top = [line for line in all_lines if line not in counted]
    if top:
        inside["<module>"] = top
    return inside


@pytest.mark.parametrize("module", tuple(HOST_NUMPY_ALLOWED))
def test_model_calls_numpy_only_in_host_side_functions(module):
    allowed = HOST_NUMPY_ALLOWED[module]
    uses = _name_uses(_tree(module), "np")
    bad = {qual: lines for qual, lines in uses.items() if qual not in allowed}
    assert not bad, ("np. used on what may be a model array (use xp = get_array_module(x), "
                     "or add the function to HOST_NUMPY_ALLOWED with the reason it is "
                     "host-side): " + "; ".join(f"stvae_np/{_path(module)}:{lines} in {qual}()"
                                                for qual, lines in bad.items()))
    stale = sorted(set(allowed) - set(uses))
    assert not stale, f"HOST_NUMPY_ALLOWED[{module!r}] lists functions that no longer use np.: {stale}"


def test_math_module_only_on_python_numbers_in_model_code():
    """``math.*`` only takes Python floats; on an array it would sync (CuPy) or fail.
    Scanned: the modules that compute on model arrays (ops, model, losses, checkpoint)."""
    allowed = {("metrics", "_gaussian_weights"),
               ("metrics", "flow_quality"),     # math.nan: the value of a pooled mean over nothing
               ("model", "Config.__post_init__")}   # math.isfinite on the Config's Python numbers
    bad = []
    for module in OPS_MODULES + tuple(HOST_NUMPY_ALLOWED):
        for qual, lines in _name_uses(_tree(module), "math").items():
            if (module, qual) not in allowed:
                bad.append(f"stvae_np/{_path(module)}:{lines} in {qual}()")
    assert not bad, f"math.* used outside the allowed host-side helpers: {bad}"


# ----------------------------------------------------------------------------- hidden device syncs
SYNC_FUNCTIONS = {"float", "int", "bool", "complex", "asnumpy"}           # f(a)
SYNC_METHODS = {"item", "get", "tolist", "tobytes", "asnumpy"}            # a.f() / _cp.asnumpy

# The training step starts here; every package function these call (transitively) is scanned.
# Both op sets are roots: the model runs either (STVAE(ops="fast"|"plain")).
_LAYER_ROOTS = ("conv2d_forward", "conv2d_backward", "maxpool2_forward", "maxpool2_backward",
                "upsample2_forward", "upsample2_backward")
_MEMORY_ROOTS = ("convlstm_forward", "convlstm_backward", "convlstm_step_forward",
                 "convlstm_step_backward")
STEP_ROOTS = (
    "model.STVAE.loss_and_grads", "model.STVAE.predict", "model.STVAE.rollout",
    "optim.RMSProp.step", "optim.clip_grad_norm", "optim.clip_grad_value",
    *(f"{m}.{fn}" for m in ("fast.layers", "layers") for fn in _LAYER_ROOTS),
    *(f"{m}.{fn}" for m in ("fast.memory", "memory") for fn in _MEMORY_ROOTS),
    "sampler.base_grid", "sampler.flow_to_grid", "sampler.bilinear_forward",
    "sampler.bilinear_backward",
    "losses.mse_forward", "losses.mse_backward", "losses.huber_smoothness_forward",
    "losses.huber_smoothness_backward", "losses.photometric_forward", "losses.photometric_backward",
)

# (function, call) -> why it is not a device sync
SYNC_ALLOWED = {
    ("losses.huber_smoothness_forward", "float"): "float(delta): δ is a Python number (config)",
    ("losses.charbonnier_forward", "float"): "float(eps): ε is a Python number (0.01 in P)",
    ("losses.geman_mcclure_forward", "float"): "float(scale): C is a Python number (config)",
    ("losses.gaussian_blur", "int"): "int(np.ceil(2σ)): σ = photo_blur is a Python number (config)",
    ("backend.to_device", "asnumpy"): "only for device='cpu': a no-op on a host clip",
    ("backend.asnumpy", "asnumpy"): "reached only through to_device(..., 'cpu') (above)",
    ("backend._gpu_computes", "asnumpy"): "gpu_available's probe: once per process, cached",
    ("backend._gpu_computes", "bool"): "the same probe's answer, a Python bool",
    ("fast.kernels._self_check", "asnumpy"): "a fused kernel's first-use check: once per kernel "
                                             "and dtype per process, then cached",
    ("fast.kernels._difference", "float"): "the same check, on host NumPy arrays (after asnumpy)",
}


def _ops_slots():
    """{attribute: (module, ...)} for ``self.layers, self.memory = OPS[ops]`` in model.py:
    the attributes (and the parameters of that name the model passes them as, e.g.
    ``losses.photometric_forward(..., layers, ...)``) that hold one of the op modules, with
    every module they may hold (``model.OPS``: the fast and the plain ones)."""
    from stvae_np.model import OPS
    slots = None
    for node in ast.walk(_tree("model")):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Tuple)
                and isinstance(node.value, ast.Subscript)
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "OPS"):
            slots = [t.attr for t in node.targets[0].elts
                     if isinstance(t, ast.Attribute) and _attribute_chain(t.value) == ("self",)]
    assert slots, "model.py: no `self.<a>, self.<b> = OPS[ops]` found"
    per_slot = list(zip(*OPS.values()))                      # ((fast.layers, layers), (fast.memory, memory))
    assert len(slots) == len(per_slot), (slots, OPS)
    return {slot: tuple(sorted(m.__name__[len("stvae_np."):] for m in modules))
            for slot, modules in zip(slots, per_slot)}


OPS_SLOTS = _ops_slots()


def _kernel_specs():
    """{field: {"fast.kernels.<function>", ...}} from fast/kernels.py's table
    ``_SPECS = {name: _Spec(build, launch, sample, key)}``: ``launch()`` and the first-use
    check call these through ``spec.<field>(...)``, which no import names. (The ``key``
    lambdas are not functions of the module and are not followed.)"""
    fields = None
    out = {}
    tree = _tree("fast.kernels")
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "_Spec":
            fields = [item.target.id for item in node.body if isinstance(item, ast.AnnAssign)]
        if (isinstance(node, ast.Assign) and _attribute_chain(node.targets[0]) == ("_SPECS",)
                and isinstance(node.value, ast.Dict)):
            for spec in node.value.values:
                assert isinstance(spec, ast.Call) and fields, "fast/kernels.py: _SPECS holds no _Spec(...)"
                for field, arg in zip(fields, spec.args):
                    if isinstance(arg, ast.Name):
                        out.setdefault(field, set()).add(f"fast.kernels.{arg.id}")
    assert out.get("launch"), "fast/kernels.py: no _SPECS table of _Spec(build, launch, sample, key) found"
    return out


KERNEL_SPECS = _kernel_specs()


def _parameters(fn):
    a = fn.args
    return {arg.arg for arg in a.posonlyargs + a.args + a.kwonlyargs}


class _PackageIndex:
    """Functions, classes and package imports of every module, for a static call graph."""

    def __init__(self):
        self.functions = {}      # "module.qual" -> FunctionDef ("fast.layers.conv2d_forward")
        self.owner = {}          # "module.qual" -> (module, class or None)
        self.classes = set()     # "module.Class"
        self.names = {}          # module -> {local name: "module2.name2"}
        self.modules = {}        # module -> {alias: "module2"}
        self.unresolved = []     # calls through an ops slot that a module of the slot lacks
        for module in MODULES:
            tree = _tree(module)
            for qual, fn in _functions(tree):
                self.functions[f"{module}.{qual}"] = fn
                self.owner[f"{module}.{qual}"] = (module, qual.split(".")[0] if "." in qual else None)
            self.classes |= {f"{module}.{n.name}" for n in tree.body if isinstance(n, ast.ClassDef)}
            names, mods = {}, {}
            for source, local, name, _ in _package_imports(module, tree):
                if name is None:
                    mods[local] = source
                else:
                    names[local] = f"{source}.{name}" if source else name
            self.names[module], self.modules[module] = names, mods

    def _target(self, qual):
        if qual in self.functions:
            return qual
        if qual in self.classes and f"{qual}.__init__" in self.functions:
            return f"{qual}.__init__"
        return None

    def _through_slot(self, qual, slot, attr):
        """Every op module's ``attr`` for a call ``<slot>.<attr>(...)``: fast and plain."""
        out = set()
        for module in OPS_SLOTS[slot]:
            target = self._target(f"{module}.{attr}")
            if target:
                out.add(target)
            else:
                self.unresolved.append(f"{qual}: {slot}.{attr} (missing in stvae_np/{_path(module)})")
        return out

    def callees(self, qual):
        module, cls = self.owner[qual]
        fn = self.functions[qual]
        params = _parameters(fn)
        out = set()
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            target = None
            if isinstance(f, ast.Name):
                target = (self._target(f"{module}.{f.id}")
                          or (self._target(self.names[module][f.id]) if f.id in self.names[module] else None))
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                if f.value.id == "self" and cls:
                    target = self._target(f"{module}.{cls}.{f.attr}")
                elif f.value.id in self.modules[module]:
                    target = self._target(f"{self.modules[module][f.value.id]}.{f.attr}")
                elif f.value.id in OPS_SLOTS and f.value.id in params:   # layers.<fn>: a module argument
                    out |= self._through_slot(qual, f.value.id, f.attr)
                elif module == "fast.kernels" and f.value.id == "spec" and f.attr in KERNEL_SPECS:
                    out |= KERNEL_SPECS[f.attr]                         # spec.launch(kernel, ...): every launcher
            elif (isinstance(f, ast.Attribute) and cls
                  and _attribute_chain(f.value) in {("self", slot) for slot in OPS_SLOTS}):
                out |= self._through_slot(qual, f.value.attr, f.attr)   # self.layers.<fn>
            if target:
                out.add(target)
        return out

    def reachable(self, roots):
        seen, todo = set(), list(roots)
        while todo:
            qual = todo.pop()
            if qual in seen:
                continue
            seen.add(qual)
            todo.extend(self.callees(qual))
        return seen


def _sync_calls(fn):
    """[(call name, line)] of float()/int()/bool()/.item()/.get()/... inside a function."""
    out = []
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in SYNC_FUNCTIONS:
            out.append((f.id, node.lineno))
        elif isinstance(f, ast.Attribute) and f.attr in SYNC_METHODS:
            out.append((f.attr, node.lineno))
    return out


def test_the_call_graph_reaches_the_ops():
    """Guard for the scanner: the training step reaches every op and helper, through
    ``self.layers``/``self.memory`` (and the ``layers`` argument of the photometric term)
    both the fast and the plain ones, and the fused kernels' dispatch."""
    assert OPS_SLOTS == {"layers": ("fast.layers", "layers"), "memory": ("fast.memory", "memory")}, OPS_SLOTS
    index = _PackageIndex()
    missing = [r for r in STEP_ROOTS if r not in index.functions]
    assert not missing, f"STEP_ROOTS names functions that do not exist: {missing}"
    reached = index.reachable(["model.STVAE.loss_and_grads"])
    expected = {
        # the fast ops (model.OPS["fast"])
        "fast.layers.conv2d_forward", "fast.layers.conv2d_backward", "fast.layers._im2col_padded",
        "fast.layers._col2im_padded", "fast.layers.pad_channel_major", "fast.layers.conv_cm_forward",
        "fast.layers.conv_cm_backward", "fast.layers._matmul_into", "fast.layers._unfold_rows",
        "fast.layers.maxpool2_backward", "fast.layers.upsample2_forward",
        "fast.layers.upsample2_backward", "fast.memory.convlstm_forward",
        "fast.memory._step_forward", "fast.memory._step_backward", "fast.memory.convlstm_backward",
        "fast.memory.lstm_gates_forward", "fast.memory.lstm_gates_backward",
        # the plain ops (model.OPS["plain"])
        "layers.conv2d_forward", "layers.conv2d_backward", "layers.im2col", "layers.col2im",
        "layers.maxpool2_forward", "layers.maxpool2_backward", "layers.upsample2_forward",
        "layers.upsample2_backward", "memory.convlstm_forward", "memory.convlstm_backward",
        "memory.convlstm_step_forward", "memory.convlstm_step_backward",
        # sampler, losses (the photometric term included), the fused kernels' dispatch
        "sampler.base_grid", "sampler._neighbours", "sampler.bilinear_weights", "sampler._gather",
        "sampler.bilinear_backward", "sampler.flow_to_grid",
        "losses._huber", "losses.huber_differences", "losses.huber_backward",
        "losses.huber_smoothness_backward", "losses.photometric_forward",
        "losses.photometric_backward", "losses.gaussian_blur", "losses.geman_mcclure_forward",
        "fast.kernels.wanted", "fast.kernels.launch", "fast.kernels._kernel_for",
        "fast.kernels._self_check", "fast.kernels._difference",
        "fast.kernels._lstm_gates_forward_launch", "fast.kernels._bilinear_weights_launch",
        "fast.kernels._huber_differences_launch", "fast.kernels._build_lstm_gates_forward",
        "fast.kernels._sample_bilinear_weights", "fast.kernels._cupy",
        "backend.scatter_add", "backend.get_array_module", "activations.sigmoid",
        "model.check_clip", "model.STVAE.encode", "model.STVAE.flow_head",
        "model.STVAE.warp_decode"}
    assert expected <= reached, sorted(expected - reached)
    steps = index.reachable(STEP_ROOTS)
    assert {"optim.rmsprop_update", "optim.sum_of_squares", "optim.clip_coefficient",
            "optim.scale_in_place"} <= steps, sorted(q for q in steps if q.startswith("optim."))
    assert not index.unresolved, ("calls through an ops slot that not every op module answers "
                                  f"(model.OPS): {sorted(set(index.unresolved))}")


def test_no_hidden_device_sync_in_the_training_step():
    """No float()/int()/bool()/.item()/.get()/.tolist()/asnumpy in any function the training
    step (loss_and_grads, RMSProp.step, clipping, every op's forward/backward, fast and
    plain) can reach: on CuPy each one makes the host wait for the GPU."""
    index = _PackageIndex()
    reached = index.reachable(STEP_ROOTS)
    found = {(qual, name): line for qual in sorted(reached)
             for name, line in _sync_calls(index.functions[qual])}
    bad = [f"stvae_np/{_path(index.owner[q][0])}:{line} {name}(...) in {q[len(index.owner[q][0]) + 1:]}()"
           for (q, name), line in found.items() if (q, name) not in SYNC_ALLOWED]
    assert not bad, ("a device sync on the GPU inside the training step (keep arrays on the "
                     "device; add to SYNC_ALLOWED only what acts on a Python number): "
                     + "; ".join(bad))
    stale = sorted(k for k in SYNC_ALLOWED if k not in found)
    assert not stale, f"SYNC_ALLOWED lists calls that are no longer there: {stale}"
