"""Coverage-guided fuzzing of every parser of untrusted input (atheris for Python, libFuzzer for the C).

``targets`` holds one harness per parser and the oracle they share, ``seeds`` writes the valid files the
campaigns start from, ``native`` builds the libFuzzer harness of the generated C, and ``campaign`` runs
one target for a number of inputs in a subprocess and reports inputs, coverage and findings. The suite
(``tests/test_fuzz.py``) runs short campaigns; ``benchmarks/fuzz.py`` runs the long ones.
"""
