"""Checkpoints: a model's parameters, its Config and anything the trainer adds, in one ``.npz``.

    save(model, path, extra=None)                  write atomically (temporary name, then rename)
    load(path, device="cpu", return_extra=False, average=True)   -> model (, extra)

The file's entries: docs/DESIGN.md section 6. Arrays are written from the host: a
checkpoint written on the GPU loads on the CPU and the other way round.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .backend import asnumpy
from .model import PARAM_NAMES, STVAE, Config
from .runfolder import atomic_write

FORMAT_VERSION = 1


def save(model, path, extra: dict | None = None):
    """Write one ``.npz`` (``runfolder.atomic_write``: never half-written): parameters,
    config, dtype, format version and ``extra`` (name -> array) under ``extra/<name>``."""
    arrays = {f"param/{k}": asnumpy(v) for k, v in model.params.items()}
    arrays["config_json"] = np.array(json.dumps(model.config.to_dict()))
    arrays["dtype"] = np.array(model.dtype.name)
    arrays["format_version"] = np.array(FORMAT_VERSION)
    arrays["magic"] = np.array("stvae_np")
    for k, v in (extra or {}).items():
        arrays[f"extra/{k}"] = np.asarray(asnumpy(v))
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def load(path, device="cpu", return_extra=False, average=True):
    """Read a checkpoint written by :func:`save`: the model on ``device`` (and ``extra``
    with ``return_extra``), with the running average of its weights where the trainer kept
    one (``Config.ema_decay``; ``average=False``: the weights themselves, to resume). FileNotFoundError
    for a missing file, ValueError for a truncated, foreign or pickled one (never unpickled)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":      # every .npz is a zip archive
            raise ValueError(f"{path}: not an .npz checkpoint (no zip header)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as err:  # numpy refuses object (pickled) arrays
        if "pickle" in str(err):
            raise ValueError(f"{path}: refused, the checkpoint holds pickled objects ({err})") from None
        raise ValueError(f"{path}: not a readable .npz checkpoint (damaged entry): {err}") from None
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npz checkpoint (truncated or corrupt?): {err}") from None
    if str(data.get("magic", "")) != "stvae_np":
        raise ValueError(f"{path}: not an stvae_np checkpoint (no 'magic' entry)")
    for key in ("format_version", "config_json", "dtype"):
        if key not in data or data[key].shape != ():
            raise ValueError(f"{path}: damaged checkpoint, its {key!r} entry is missing or not a scalar")
    if data["format_version"].dtype.kind not in "iu":
        raise ValueError(f"{path}: damaged checkpoint, format_version is {data['format_version'].dtype}")
    version = int(data["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {version}, this code reads {FORMAT_VERSION}")
    try:
        fields = json.loads(str(data["config_json"]))
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        config = Config.from_dict(fields)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: damaged checkpoint, its config_json is refused: {err}") from None
    dtype = str(data["dtype"])
    if dtype not in ("float32", "float64"):
        raise ValueError(f"{path}: damaged checkpoint, dtype {dtype!r} (float32 or float64 only)")
    model = STVAE(config, dtype=dtype, device="cpu")
    for name in PARAM_NAMES:
        key = f"extra/average/{name}" if average and f"extra/average/{name}" in data else f"param/{name}"
        if key not in data:
            raise ValueError(f"{path}: checkpoint lacks parameter {name!r}")
        value = data[key]
        if value.shape != model.params[name].shape:
            raise ValueError(f"{path}: parameter {name!r} has shape {value.shape}, "
                             f"config implies {model.params[name].shape}")
        if value.dtype != model.dtype:
            raise ValueError(f"{path}: parameter {name!r} is {value.dtype}, the checkpoint's "
                             f"dtype is {dtype} (no cast: the file is damaged or foreign)")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{path}: parameter {name!r} holds NaN or infinite values")
        model.params[name] = value
    unknown = [k for k in data if k.startswith("param/") and k[len("param/"):] not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"{path}: checkpoint holds unknown parameters {unknown}")
    model.to(device)
    if return_extra:
        extra = {k[len("extra/"):]: v for k, v in data.items() if k.startswith("extra/")}
        return model, extra
    return model
