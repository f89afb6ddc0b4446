"""Train with K digits in each *training* clip; held-out clips unchanged (two digits).

    python docs/flow_study/training_digits.py K [python -m stvae_np.train's arguments]

Half of the learned flow's direction error on the tiny preset's clips comes from digits
that overlap (docs/flow_study.md, section 9): on a 32×32 canvas two 14×14 digits are
within 10 px of each other in about half the steps. This script runs the trainer
unchanged except that the training clips (split "train") hold K digits instead of two,
so the model sees more overlaps per clip; the validation and test clips (split "test")
are today's. Section 9 of docs/flow_study.md has the answer.
"""
import functools
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))   # the repository root
import stvae_np.data as D  # noqa: E402


def with_training_digits(k):
    """``data.moving_mnist`` with ``num_digits=k`` for the training split only."""
    original = D.moving_mnist

    @functools.wraps(original)
    def moving_mnist(n, seq_len=20, size=64, digit_size=28, num_digits=2, speed=3.6,
                     split="train", seed=0):
        if split == "train":
            num_digits = k
        return original(n, seq_len, size, digit_size, num_digits, speed, split, seed)
    return moving_mnist


if __name__ == "__main__":
    D.moving_mnist = with_training_digits(int(sys.argv[1]))   # the trainer's source looks it up per call
    from stvae_np.train import main
    sys.exit(main(sys.argv[2:]))
