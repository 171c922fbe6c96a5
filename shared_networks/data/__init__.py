"""Data of the bundles: datalists of the public layouts (BTCV, MSD Task01 / BraTS 2021, ChestX-ray14), input readers,
transforms and tumour-region conversions.

* :mod:`~shared_networks.data.btcv`, :mod:`~shared_networks.data.brats`, :mod:`~shared_networks.data.cxr14`: datalists;
  the folder layouts and their cases in :mod:`~shared_networks.data.btcv_layouts` and
  :mod:`~shared_networks.data.brats_layouts`, BTCV's splits in :mod:`~shared_networks.data.btcv_splits`.
* :mod:`~shared_networks.data.files`: NIfTI and JSON helpers of the datalist builders.
* :mod:`~shared_networks.data.readers`: inference inputs (NIfTI, DICOM series) and datalist split checks.
* :mod:`~shared_networks.data.radiographs`: radiographs read as one grey channel (DICOM as displayed:
  :mod:`~shared_networks.data.dicom_display`);
  :mod:`~shared_networks.data.regions`: tumour-region transforms.
* :mod:`~shared_networks.data.cache_budget`: the cache estimated from the image headers before any image is read;
  :mod:`~shared_networks.data.caching`: the memory cache, the disk cache for the rest, and what runs after both.
* :mod:`~shared_networks.data.prepared`: chest radiographs pre-processed once into a compact memory-mapped store, read
  by the workflows instead of the full-size PNGs (``prepared_dir``).

Command line (validate, then write a datalist): ``python -m shared_networks.cli.prepare btcv|brats|cxr14 ...``.
"""
