"""Cold start: import fastconv, load a saved model, first call (compile cache warm).

    python scripts/cold_start.py resnet18.npz     # a file written by model.save()

Run it once to fill the compile cache, then again for the numbers.
"""
import sys
import time

t0 = time.perf_counter()
import numpy as np  # noqa: E402

import fastconv as fc  # noqa: E402

t1 = time.perf_counter()
m = fc.load(sys.argv[1])
t2 = time.perf_counter()
x = np.zeros((1,) + tuple((m.example_shapes or [(1, 3, 224, 224)])[0][1:]), np.float32)
m(x)
t3 = time.perf_counter()
m(x)
t4 = time.perf_counter()
print(f"import {t1 - t0:.2f} s, load {t2 - t1:.2f} s, first call {t3 - t2:.2f} s, "
      f"second {1e3 * (t4 - t3):.1f} ms, total to first result {t3 - t0:.2f} s")
