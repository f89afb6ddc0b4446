"""One line for every bad setting: a table of bad inputs to ``stvae_np.train`` and
``stvae_np.evaluate``, each with its exit status and the key words of its message.

Every case must end in exactly one line on stderr, no traceback, and (for training)
nothing written into the run folder: the errors come before any work.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from stvae_np import checkpoint
from stvae_np import evaluate as E
from stvae_np import train as T
from stvae_np.model import STVAE, Config

FAST = ["--batch-size", "2", "--seq-len", "3", "--eval-clips", "2", "--quiet", "--no-figures",
        "--steps", "2"]


def _npz_edit(src, dst, **changes):
    """A copy of checkpoint ``src`` with entries replaced (None: removed)."""
    with np.load(src, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    for k, v in changes.items():
        k = k.replace("__", "/")
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    np.savez(dst, **data)
    return str(dst)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    f = {"dir": d}
    mp = pytest.MonkeyPatch()
    mp.setattr(T, "final_evaluation", lambda model, clips, final, *a, **k: (dict(final), {}))
    run = d / "run"
    assert T.main([*FAST, "--out", str(run), "--steps", "1"]) == 0
    mp.undo()
    good = run / "checkpoint.npz"
    f["run"], f["ckpt"] = str(run), str(good)
    with np.load(good) as z:
        w = z["param/enc.W"]
        v = z["extra/opt/v/enc.W"]
    f["ckpt_int"] = _npz_edit(good, d / "int.npz", **{"param/enc.W": w.astype(np.int32)})
    f["ckpt_complex"] = _npz_edit(good, d / "complex.npz", **{"param/enc.W": w.astype(np.complex64)})
    f["ckpt_f16"] = _npz_edit(good, d / "f16.npz", **{"param/enc.W": w.astype(np.float16)})
    f["ckpt_nan"] = _npz_edit(good, d / "nan.npz", **{"param/enc.W": w * np.float32(np.nan)})
    f["ckpt_noversion"] = _npz_edit(good, d / "nover.npz", format_version=None)
    f["ckpt_badconfig"] = _npz_edit(good, d / "badcfg.npz", config_json=np.array("{not json"))
    cfg = json.loads(str(np.load(good)["config_json"]))
    f["ckpt_negfilters"] = _npz_edit(good, d / "neg.npz",
                                     config_json=np.array(json.dumps({**cfg, "enc_filters": -1})))
    f["ckpt_dtype"] = _npz_edit(good, d / "dtype.npz", dtype=np.array("int8"))
    f["ckpt_opt"] = _npz_edit(good, d / "opt.npz", **{"extra/opt/v/enc.W": v[:1]})
    f["ckpt_optnan"] = _npz_edit(good, d / "optnan.npz", **{"extra/opt/v/enc.W": v * np.nan})
    f["ckpt_sampler"] = _npz_edit(good, d / "sampler.npz", **{"extra/sampler_state": np.array("garbage")})
    f["ckpt_step_float"] = _npz_edit(good, d / "stepf.npz", **{"extra/step": np.array(3.7)})
    f["ckpt_step_neg"] = _npz_edit(good, d / "stepn.npz", **{"extra/step": np.array(-1)})
    f["ckpt_step_big"] = _npz_edit(good, d / "stepb.npz", **{"extra/step": np.array(10 ** 6)})
    f["ckpt_history"] = _npz_edit(good, d / "hist.npz", **{"extra/history": np.array("[1, 2]")})
    f["ckpt_nostate"] = str(d / "nostate.npz")
    checkpoint.save(STVAE(Config.tiny()), f["ckpt_nostate"])
    data = good.read_bytes()
    (d / "trunc.npz").write_bytes(data[: len(data) // 2])
    f["ckpt_trunc"] = str(d / "trunc.npz")
    (d / "text.npz").write_text("hello")
    f["ckpt_text"] = str(d / "text.npz")
    (d / "empty_ckpt.npz").write_bytes(b"")
    f["ckpt_empty"] = str(d / "empty_ckpt.npz")

    # clip files
    rng = np.random.default_rng(0)
    (d / "empty.npy").write_bytes(b"")
    f["empty"] = str(d / "empty.npy")
    np.save(d / "full.npy", rng.integers(0, 256, (4, 5, 32, 32), dtype=np.uint8))
    raw = (d / "full.npy").read_bytes()
    (d / "trunc.npy").write_bytes(raw[: len(raw) // 2])
    f["trunc"] = str(d / "trunc.npy")
    (d / "text.npy").write_text("these are not clips\n")
    f["text"] = str(d / "text.npy")
    np.save(d / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    f["pickled"] = str(d / "pickled.npy")
    for name, arr in {
        "zero_clips": np.zeros((0, 5, 32, 32), np.uint8),
        "zero_frames": np.zeros((4, 5, 0, 0), np.uint8),
        "big_frames": np.zeros((4, 5, 64, 64), np.uint8),
        "time_major": np.zeros((20, 30, 32, 32), np.uint8),
        "rank3": np.zeros((4, 32, 32), np.uint8),
        "int32": np.zeros((4, 5, 32, 32), np.int32),
        "float_range": np.full((4, 5, 32, 32), 2.0, np.float32),
        "float_nan": np.full((4, 5, 32, 32), np.nan, np.float32),
        "one_clip": np.zeros((1, 5, 32, 32), np.uint8),
        "short": np.zeros((4, 2, 32, 32), np.uint8),
        "one_frame": np.zeros((4, 1, 32, 32), np.uint8),
    }.items():
        np.save(d / f"{name}.npy", arr)
        f[name] = str(d / f"{name}.npy")
    np.savez(d / "two.npz", a=np.zeros((4, 5, 32, 32), np.uint8), b=np.zeros(3))
    f["two_npz"] = str(d / "two.npz")
    (d / "clips.txt").write_text("1 2 3")
    f["txt"] = str(d / "clips.txt")
    # a header promising 50 GiB of 64×64 frames, the rest of the file sparse: refused
    # from the header, before a single frame is read or converted
    huge = d / "huge.npy"
    shape = (650_000, 20, 64, 64)
    with open(huge, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
        fh.truncate(fh.tell() + int(np.prod(shape)))
    f["huge"] = str(huge)

    # folders
    (d / "a_file").write_text("x")
    f["a_file"] = str(d / "a_file")
    busy = d / "busy"
    busy.mkdir()
    f["sleeper"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (busy / ".lock").write_text(f"{f['sleeper'].pid}\n")
    f["busy"] = str(busy)
    evald = d / "evaldone"
    evald.mkdir()
    (evald / "metrics.json").write_text("{}")
    f["evaldone"] = str(evald)
    yield f
    f["sleeper"].kill()
    f["sleeper"].wait()


def out(f, name):
    return str(f["dir"] / "outs" / name)


# (id, tool, argv from the files, exit status, key words)
TRAIN = [
    ("lr nan", lambda f: ["--lr", "nan"], 2, ["--lr", "finite"]),
    ("lr inf", lambda f: ["--lr", "inf"], 2, ["--lr", "finite"]),
    ("lr negative", lambda f: ["--lr", "-1"], 2, ["--lr", "(0, 1]"]),
    ("lr zero", lambda f: ["--lr", "0"], 2, ["--lr", "(0, 1]"]),
    ("lr 1e6", lambda f: ["--lr", "1e6"], 2, ["--lr", "(0, 1]"]),
    ("lr text", lambda f: ["--lr", "fast"], 2, ["--lr", "invalid float"]),
    ("clip-norm nan", lambda f: ["--clip-norm", "nan"], 2, ["--clip-norm", "finite"]),
    ("clip-norm -5", lambda f: ["--clip-norm", "-5"], 2, ["--clip-norm", "positive"]),
    ("seed -1", lambda f: ["--seed", "-1"], 2, ["--seed"]),
    ("seed 2**40", lambda f: ["--seed", str(2 ** 40)], 2, ["--seed"]),
    ("steps 3.7", lambda f: ["--steps", "3.7"], 2, ["--steps", "invalid int"]),
    ("steps 0", lambda f: ["--steps", "0"], 2, ["--steps", "at least 1"]),
    ("steps -3", lambda f: ["--steps", "-3"], 2, ["--steps", "at least 1"]),
    ("batch 0", lambda f: ["--batch-size", "0"], 2, ["--batch-size"]),
    ("seq-len 1", lambda f: ["--seq-len", "1"], 2, ["--seq-len"]),
    ("eval-every 0", lambda f: ["--eval-every", "0"], 2, ["--eval-every"]),
    ("ckpt-every 0", lambda f: ["--ckpt-every", "0"], 2, ["--ckpt-every"]),
    ("log-every 0", lambda f: ["--log-every", "0"], 2, ["--log-every"]),
    ("eval-clips 0", lambda f: ["--eval-clips", "0"], 2, ["--eval-clips"]),
    ("preset huge", lambda f: ["--preset", "huge"], 2, ["unknown preset"]),
    ("ops slow", lambda f: ["--ops", "slow"], 2, ["--ops", "invalid choice"]),
    ("layout XY", lambda f: ["--layout", "XY"], 2, ["--layout", "invalid choice"]),
    ("device tpu", lambda f: ["--device", "tpu"], 2, ["--device", "invalid choice"]),
    ("unknown flag", lambda f: ["--frobnicate"], 2, ["unrecognized arguments"]),
    ("set clip_value nan", lambda f: ["--set", "clip_value=nan"], 2, ["clip_value", "finite"]),
    ("set clip_value -1", lambda f: ["--set", "clip_value=-1"], 2, ["clip_value"]),
    ("set photo_weight nan", lambda f: ["--set", "photo_weight=nan"], 2, ["photo_weight", "finite"]),
    ("set photo_weight -3", lambda f: ["--set", "photo_weight=-3"], 2, ["photo_weight"]),
    ("set photo_blur -1", lambda f: ["--set", "photo_blur=-1"], 2, ["photo_blur"]),
    ("set lr_decay nan", lambda f: ["--set", "lr_decay=nan"], 2, ["lr_decay"]),
    ("set lr_decay 0", lambda f: ["--set", "lr_decay=0"], 2, ["lr_decay", "(0, 1]"]),
    ("set lr_decay 1.5", lambda f: ["--set", "lr_decay=1.5"], 2, ["lr_decay", "(0, 1]"]),
    ("set lr_decay_every 0", lambda f: ["--set", "lr_decay_every=0"], 2, ["lr_decay_every"]),
    ("set steps_per_epoch 0", lambda f: ["--set", "steps_per_epoch=0"], 2, ["steps_per_epoch"]),
    ("set enc_filters -1", lambda f: ["--set", "enc_filters=-1"], 2, ["enc_filters", "at least 1"]),
    ("set mem_filters 0", lambda f: ["--set", "mem_filters=0"], 2, ["mem_filters", "at least 1"]),
    ("set height text", lambda f: ["--set", "height=abc"], 2, ["height", "not a valid int"]),
    ("set height odd", lambda f: ["--set", "height=33"], 2, ["even"]),
    ("set huber_delta 0", lambda f: ["--set", "huber_delta=0"], 2, ["huber_delta"]),
    ("set huber_weight inf", lambda f: ["--set", "huber_weight=inf"], 2, ["huber_weight"]),
    ("set recon_flow_grad nan", lambda f: ["--set", "recon_flow_grad=nan"], 2, ["recon_flow_grad"]),
    ("set lr nan", lambda f: ["--set", "lr=nan"], 2, ["lr"]),
    ("set seq_len 1", lambda f: ["--set", "seq_len=1"], 2, ["seq_len"]),
    ("set unknown field", lambda f: ["--set", "colour=red"], 2, ["FIELD=VALUE"]),
    ("set no value", lambda f: ["--set", "photo_weight"], 2, ["FIELD=VALUE"]),
    ("set kernel even", lambda f: ["--set", "flow_kernel=4"], 2, ["flow_kernel", "odd"]),
    # data files
    ("data missing", lambda f: ["--data", "no/such/file.npy"], 2, ["neither one of"]),
    ("data zero bytes", lambda f: ["--data", f["empty"]], 2, ["empty.npy", "empty file"]),
    ("data truncated", lambda f: ["--data", f["trunc"]], 2, ["trunc.npy", "truncated"]),
    ("data text file", lambda f: ["--data", f["text"]], 2, ["text.npy", "not a NumPy .npy"]),
    ("data pickled", lambda f: ["--data", f["pickled"]], 2, ["pickled.npy", "pickled"]),
    ("data 0 clips", lambda f: ["--data", f["zero_clips"]], 2, ["zero_clips.npy", "no frames"]),
    ("data 0x0 frames", lambda f: ["--data", f["zero_frames"]], 2, ["zero_frames.npy", "no frames"]),
    ("data wrong size", lambda f: ["--data", f["big_frames"]], 2, ["big_frames.npy", "expects 1×32×32"]),
    ("data huge header", lambda f: ["--data", f["huge"]], 2, ["huge.npy", "expects 1×32×32"]),
    ("data time-major?", lambda f: ["--data", f["time_major"]], 2, ["time_major.npy", "--layout"]),
    ("data layout wrong rank", lambda f: ["--data", f["big_frames"], "--layout", "NTCHW"], 2,
     ["layout NTCHW needs a 5-D"]),
    ("data rank 3", lambda f: ["--data", f["rank3"]], 2, ["rank3.npy", "4-D"]),
    ("data int32", lambda f: ["--data", f["int32"]], 2, ["int32.npy", "uint8"]),
    ("data float range", lambda f: ["--data", f["float_range"]], 2, ["float_range.npy", "[0, 1]"]),
    ("data float nan", lambda f: ["--data", f["float_nan"]], 2, ["float_nan.npy", "NaN"]),
    ("data one clip", lambda f: ["--data", f["one_clip"]], 2, ["one_clip.npy", "at least 2 clips"]),
    ("data too short", lambda f: ["--data", f["short"]], 2, ["short.npy", "--seq-len"]),
    ("data one frame", lambda f: ["--data", f["one_frame"]], 2, ["one_frame.npy", "2 frames"]),
    ("data npz two arrays", lambda f: ["--data", f["two_npz"]], 2, ["two.npz", "key 'clips'"]),
    ("data .txt", lambda f: ["--data", f["txt"]], 2, ["clips.txt", "unknown extension"]),
    ("data npz as npy", lambda f: ["--data", f["ckpt_text"]], 2, ["text.npz", "zip header"]),
    # run folders
    ("out is a file", lambda f: ["--out", f["a_file"]], 2, ["--out", "a_file"]),
    ("out under a file", lambda f: ["--out", f["a_file"] + "/sub"], 2, ["--out", "cannot create"]),
    ("out holds a run", lambda f: ["--out", f["run"]], 2, ["already holds a run", "--overwrite"]),
    ("out in use", lambda f: ["--out", f["busy"]], 2, ["in use by process"]),
    # resume
    ("resume missing", lambda f: ["--resume", "no/such/ckpt.npz"], 2, ["checkpoint not found"]),
    ("resume a folder", lambda f: ["--resume", f["run"]], 2, ["checkpoint not found"]),
    ("resume preset paper", lambda f: ["--resume", f["ckpt"], "--preset", "paper"], 2, ["--preset", "keeps"]),
    ("resume other lr", lambda f: ["--resume", f["ckpt"], "--lr", "0.5"], 2, ["--lr 0.5", "refused"]),
    ("resume other data", lambda f: ["--resume", f["ckpt"], "--data", "shapes"], 2, ["--data shapes", "refused"]),
    ("resume other batch", lambda f: ["--resume", f["ckpt"], "--batch-size", "4"], 2, ["--batch-size 4"]),
    ("resume other seed", lambda f: ["--resume", f["ckpt"], "--seed", "7"], 2, ["--seed 7"]),
    ("resume with set", lambda f: ["--resume", f["ckpt"], "--set", "photo_weight=1"], 2, ["--set"]),
    ("resume steps below", lambda f: ["--resume", f["ckpt"], "--steps", "0"], 2, ["--steps"]),
    ("resume step 10**6", lambda f: ["--resume", f["ckpt_step_big"]], 2, ["step 1000000", "beyond --steps"]),
    ("resume step 3.7", lambda f: ["--resume", f["ckpt_step_float"]], 2, ["stepf.npz", "damaged training state"]),
    ("resume step -1", lambda f: ["--resume", f["ckpt_step_neg"]], 2, ["stepn.npz", "damaged training state"]),
    ("resume bad history", lambda f: ["--resume", f["ckpt_history"]], 2, ["hist.npz", "damaged training state"]),
    ("resume no state", lambda f: ["--resume", f["ckpt_nostate"]], 2, ["without training state"]),
    ("resume damaged optimizer", lambda f: ["--resume", f["ckpt_opt"]], 2, ["opt.npz", "damaged optimizer"]),
    ("resume nan optimizer", lambda f: ["--resume", f["ckpt_optnan"]], 2, ["optnan.npz", "damaged optimizer"]),
    ("resume damaged sampler", lambda f: ["--resume", f["ckpt_sampler"]], 2, ["sampler.npz", "damaged sampler"]),
    ("ckpt int params", lambda f: ["--resume", f["ckpt_int"]], 2, ["int.npz", "int32"]),
    ("ckpt complex params", lambda f: ["--resume", f["ckpt_complex"]], 2, ["complex.npz", "complex64"]),
    ("ckpt float16 params", lambda f: ["--resume", f["ckpt_f16"]], 2, ["f16.npz", "float16"]),
    ("ckpt NaN params", lambda f: ["--resume", f["ckpt_nan"]], 2, ["nan.npz", "NaN"]),
    ("ckpt no format_version", lambda f: ["--resume", f["ckpt_noversion"]], 2, ["nover.npz", "format_version"]),
    ("ckpt bad config_json", lambda f: ["--resume", f["ckpt_badconfig"]], 2, ["badcfg.npz", "config_json"]),
    ("ckpt enc_filters -1", lambda f: ["--resume", f["ckpt_negfilters"]], 2, ["neg.npz", "enc_filters"]),
    ("ckpt dtype int8", lambda f: ["--resume", f["ckpt_dtype"]], 2, ["dtype.npz", "dtype"]),
    ("ckpt truncated", lambda f: ["--resume", f["ckpt_trunc"]], 2, ["trunc.npz", "truncated or corrupt"]),
    ("ckpt text", lambda f: ["--resume", f["ckpt_text"]], 2, ["text.npz", "no zip header"]),
    ("ckpt zero bytes", lambda f: ["--resume", f["ckpt_empty"]], 2, ["empty_ckpt.npz", "no zip header"]),
]

EVALUATE = [
    ("missing checkpoint", lambda f: ["no/such.npz"], 2, ["not found"]),
    ("clips 0", lambda f: [f["ckpt"], "--clips", "0"], 2, ["--clips"]),
    ("context 0", lambda f: [f["ckpt"], "--context", "0"], 2, ["--context"]),
    ("future -1", lambda f: [f["ckpt"], "--future", "-1"], 2, ["--future"]),
    ("batch 0", lambda f: [f["ckpt"], "--batch-size", "0"], 2, ["--batch-size"]),
    ("clips text", lambda f: [f["ckpt"], "--clips", "many"], 2, ["--clips", "invalid int"]),
    ("unknown data", lambda f: [f["ckpt"], "--data", "mnist-please"], 2, ["mnist-please"]),
    ("data wrong size", lambda f: [f["ckpt"], "--data", f["big_frames"]], 2, ["expects 1×32×32"]),
    ("data huge header", lambda f: [f["ckpt"], "--data", f["huge"]], 2, ["huge.npy", "expects 1×32×32"]),
    ("data truncated", lambda f: [f["ckpt"], "--data", f["trunc"]], 2, ["trunc.npy", "truncated"]),
    ("data zero bytes", lambda f: [f["ckpt"], "--data", f["empty"]], 2, ["empty.npy", "empty"]),
    ("data time-major?", lambda f: [f["ckpt"], "--data", f["time_major"]], 2, ["--layout"]),
    ("data too short", lambda f: [f["ckpt"], "--data", f["short"]], 2, ["short.npy", "--context + --future"]),
    ("ckpt NaN params", lambda f: [f["ckpt_nan"]], 2, ["NaN"]),
    ("ckpt int params", lambda f: [f["ckpt_int"]], 2, ["int32"]),
    ("ckpt float16 params", lambda f: [f["ckpt_f16"]], 2, ["float16"]),
    ("ckpt bad config", lambda f: [f["ckpt_badconfig"]], 2, ["config_json"]),
    ("ckpt text", lambda f: [f["ckpt_text"]], 2, ["no zip header"]),
    ("out holds results", lambda f: [f["ckpt"], "--out", f["evaldone"]], 2, ["already holds results", "--overwrite"]),
    ("out is the run folder", lambda f: [f["ckpt"], "--out", f["run"]], 2, ["already holds results"]),
    ("out is a file", lambda f: [f["ckpt"], "--out", f["a_file"]], 2, ["not a folder"]),
    ("out in use", lambda f: [f["ckpt"], "--out", f["busy"]], 2, ["in use by process"]),
    ("layout bogus", lambda f: [f["ckpt"], "--layout", "XY"], 2, ["invalid choice"]),
]


def _check(capsys, code, want_code, words):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code == want_code, err
    assert err.count("\n") == 1, err                    # one line
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("argv,code,words", [c[1:] for c in TRAIN], ids=[c[0] for c in TRAIN])
def test_train_refuses_with_one_line(files, capsys, argv, code, words):
    argv = argv(files)
    target = out(files, "fresh") if "--out" not in argv else None
    extra = ["--out", target] if target else []
    got = T.main([*FAST, *extra, *argv])
    _check(capsys, got, code, words)
    if target:                                           # nothing written: errors come first
        assert not os.path.exists(os.path.join(target, "run.json"))
        assert not os.path.exists(os.path.join(target, "checkpoint.npz"))


@pytest.mark.parametrize("argv,code,words", [c[1:] for c in EVALUATE], ids=[c[0] for c in EVALUATE])
def test_evaluate_refuses_with_one_line(files, capsys, argv, code, words):
    got = E.main([*argv(files), "--quiet", "--no-figures"])
    _check(capsys, got, code, words)


def test_the_good_run_is_untouched_by_all_of_the_above(files):
    """The refused attempts at the finished run's folder left it as it was."""
    run = files["run"]
    assert sorted(p for p in os.listdir(run) if not p.startswith(".")) == sorted(
        ["checkpoint.npz", "config.json", "run.json", "metrics.json"])
    assert json.loads(open(os.path.join(run, "metrics.json")).read())["steps"] == 1
