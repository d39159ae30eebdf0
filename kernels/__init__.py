"""Numba kernels of fastconv, installed as ``fastconv.kernels``.

``reference`` holds the float64 NumPy oracles; ``cpu`` the parallel Numba
kernels (one module per family); ``cuda`` their numba.cuda twins.  Kernels
never validate: the API layer in ``fastconv`` does that once per call.
"""
