"""A corpus of malformed and unusual NIfTI files, generated from valid ones (no binaries).

``cases.CASES`` lists every case with its documented outcome; ``table`` prints
them as the markdown table of the docs section "What happens with broken files".
"""
