"""Skeleton data: raw readers, denoising, the prepared store, protocols and the on-GPU feeder.

Nothing here imports torch at module level except :mod:`trainer.data.feeder`, so ``trainer prepare``
runs on machines without a GPU build of PyTorch.
"""
