"""stvae_np: the spatio-temporal video autoencoder with differentiable memory
(Patraucean, Handa & Cipolla, ICLR 2016 workshop, arXiv 1511.06309), written out by
hand in NumPy / CuPy, every forward and backward pass next to each other.

The model predicts the next frame of a clip by warping the current one with an optical
flow it regresses from a ConvLSTM memory, and so learns flow without flow labels.

    layers.py, memory.py, sampler.py, losses.py   the paper's parts: equations and plain code,
    optim.py, activations.py                      each op a *_forward / *_backward pair
    fast/                                         layers and memory made fast (the same numbers)
    model.py, checkpoint.py                       Config presets, STVAE (the model); save, load
    train.py                                      python -m stvae_np.train
    data.py, metrics.py, evaluate.py, report.py   clips, scores, python -m stvae_np.evaluate

README.md says how to run it; docs/DESIGN.md fixes the maths, the layouts, the units
and the public names; tutorials/ teaches it one part at a time.
"""
__version__ = "0.1.0"
