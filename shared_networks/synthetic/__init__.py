"""Synthetic data sets (phantoms) for tests, demos and smoke runs; never packed into a release.

* :mod:`~shared_networks.synthetic.ct`: abdominal CT in the BTCV tutorial layout, drawn on the canvas of
  :mod:`~shared_networks.synthetic.ct_canvas`.
* :mod:`~shared_networks.synthetic.cxr`: chest radiographs in the NIH ChestX-ray14 layout.
* :mod:`~shared_networks.synthetic.brain`: brain tumour MRI in the MSD Task01 and BraTS 2021 layouts.
* :mod:`~shared_networks.synthetic.common`: geometry checks, seeds and interpolation shared by the generators.

Command line: ``python -m shared_networks.cli.phantoms btcv|cxr|msd|brats2021 OUTPUT_DIR``.
"""
