"""Tools that measure stvae_np, kept outside the package: ``bench.py`` (one training step
against the same machine's matmul, ``python -m benchmarks.bench``), ``opcount.py`` (the
array operations, i.e. GPU kernel launches, of a step), ``torch_reference.py`` (the same
step in PyTorch, to time against) and ``gpu_check.sh``. Run them from the repository root."""
