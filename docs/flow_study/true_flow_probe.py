"""Does the loss prefer the true motion? ``evaluate.true_flow_probe`` on saved runs.

    python docs/flow_study/true_flow_probe.py RUN_DIR [RUN_DIR ...]

For each run's checkpoint, on 64 validation and 64 test clips of 10 frames
(``load_eval_clips``: test digits, ``VAL_SEED`` / ``TEST_SEED``), prints the next-frame
MSE over copy-last at steps t ≥ 2 when the model's own encoder and decoder are fed its
learned flow, the true flow (2×2 block mean, and the mean over each block's object
pixels) and zero flow. A recipe whose model predicts better with the true flow than
with its own has a loss that prefers the motion (docs/flow_study.md, sections 1, 8.1, 10).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
from stvae_np import checkpoint  # noqa: E402
from stvae_np.data import TEST_SEED, VAL_SEED, load_eval_clips  # noqa: E402
from stvae_np.evaluate import true_flow_probe  # noqa: E402

if __name__ == "__main__":
    for run in sys.argv[1:]:
        model = checkpoint.load(pathlib.Path(run) / "checkpoint.npz")
        for name, seed in (("validation", VAL_SEED), ("test", TEST_SEED)):
            clips, _ = load_eval_clips("moving-mnist", model.config, 64, 10, seed=seed)
            r = true_flow_probe(model, clips)
            print(run, name, " ".join(f"{k}={r[k + '_over_copy_last']:.3f}"
                                      for k in ("learned", "true", "true_obj", "zero")), flush=True)
