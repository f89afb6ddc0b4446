"""stvae_np: the spatio-temporal video autoencoder with differentiable memory
(Patraucean, Handa & Cipolla, ICLR 2016 workshop, arXiv 1511.06309), written out by
hand in NumPy / CuPy, every forward and backward pass next to each other.

The model predicts the next frame of a clip by warping the current one with an optical
flow it regresses from a ConvLSTM memory, and so learns flow without flow labels.

    conv.py, convlstm.py, sampler.py, losses.py   the ops, each *_forward / *_backward
    reference.py                                  the same ops written plainly, to read
    model.py                                      Config presets and STVAE (the model)
    optim.py, train.py                            RMSProp, clipping; python -m stvae_np.train
    data.py, metrics.py, evaluate.py, report.py   clips, scores, python -m stvae_np.evaluate

README.md says how to run it; docs/DESIGN.md fixes the maths, the layouts, the units
and the public names; tutorials/ teaches it one part at a time.
"""
__version__ = "0.1.0"
