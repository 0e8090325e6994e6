"""asv benchmarks of xarray-nifti, each next to its nibabel equivalent.

Inputs are generated once per run in ``setup_cache`` (see :mod:`._data`);
sizes are moderate (a 31 MB int16 4-D series, an 8 MB float32 volume) so the
whole suite runs in a few minutes. ``benchmarks/compare.py`` measures the
full-size ratios side by side in one run.
"""
