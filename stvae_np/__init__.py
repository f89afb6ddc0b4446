"""stvae_np: the spatio-temporal video autoencoder with differentiable memory
(Patraucean, Handa & Cipolla, ICLR 2016 workshop, arXiv 1511.06309), written out by
hand in NumPy / CuPy. See README.md and ../shared/DESIGN.md for the conventions."""

__version__ = "0.1.0"
