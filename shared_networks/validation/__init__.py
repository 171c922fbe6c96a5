"""Data-set checks run before training: every problem of a BTCV, brain tumour or ChestX-ray14 folder, by file.

* :mod:`~shared_networks.validation.problems`: :class:`Problem`, :class:`ValidationReport`, :class:`DatasetError`.
* :mod:`~shared_networks.validation.filetypes`: what stands at a path (a regular file, not a FIFO, folder or device;
  never opened) and whether its content is its name's format (magic bytes).
* :mod:`~shared_networks.validation.volumes`: NIfTI image and label checks.
* :mod:`~shared_networks.validation.images`: radiograph (PNG) checks.
* :mod:`~shared_networks.validation.datasets`: ``validate_btcv``, ``validate_brats``, ``validate_cxr14``.

Command line: ``python -m shared_networks.cli.validate btcv|brats|cxr14 --dataset_dir DIR``.
"""
