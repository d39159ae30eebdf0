"""Transposed convolution (the adjoint of conv2d; torch.nn.ConvTranspose2d, ONNX ConvTranspose).

With x (N, C, H, W), w (C, Kg, R, S) in torch's layout, groups G, Cg = C/G:

    y[n, g*Kg + k, i*sh - pt + r*dh, j*sw - pl + s*dw] += sum_c w[g*Cg + c, k, r, s] * x[n, g*Cg + c, i, j]

then y = act(y + b).  Per (image, group, block of output channels) it is one
SGEMM into a column buffer,

    cols[(k, r, s), (i, j)] = wt[g, (k, r, s), c] @ x[n, g*Cg + c, (i, j)]

(wt is w regrouped as (G, Kg*R*S, Cg), done once per weight), followed by a
col2im scatter-add of each (r, s) row into the output plane.  Tasks own whole
output planes, so the scatter needs no atomics.
"""
import numba
from numba import njit, prange

from . import FASTMATH
from .blas import sgemm_rm
from .epilogue import apply_row


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv_transpose2d(x3, wt, b, y, H, W, R, S, sh, sw, pt, pl, dh, dw, kblock, act,
                     cols_ws, scal_ws):
    """y (N, K, OH, OW) = act(conv_transpose(x3 (N, C, H*W), wt (G, Kg*R*S, Cg)) + b).

    kblock: output channels per task; cols_ws: (threads, >= kblock*R*S*H*W) float32;
    scal_ws: (threads, >= 2) float32.
    """
    N, C, HW = x3.shape
    G = wt.shape[0]
    Cg = wt.shape[2]
    K, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    Kg = K // G
    RS = R * S
    nkb = (Kg + kblock - 1) // kblock
    for t in prange(N * G * nkb):
        kb = t % nkb
        g = (t // nkb) % G
        n = t // (nkb * G)
        k0 = kb * kblock
        nk = min(kblock, Kg - k0)
        tid = numba.get_thread_id()
        cols = cols_ws[tid, :nk * RS * HW].reshape((nk * RS, HW))
        sgemm_rm(nk * RS, HW, Cg, wt, (g * Kg * RS + k0 * RS) * Cg, Cg,
                 x3, (n * C + g * Cg) * HW, HW, cols, 0, HW, 0.0, scal_ws[tid])
        for kk in range(nk):
            k = g * Kg + k0 + kk
            plane = y[n, k]
            plane[:, :] = 0.0
            for r in range(R):
                for s in range(S):
                    src = cols[(kk * R + r) * S + s]
                    coff = s * dw - pl
                    # input columns j whose output column j*sw + coff lies in [0, OW)
                    j0 = 0 if coff >= 0 else (-coff + sw - 1) // sw
                    j1 = min(W, (OW - 1 - coff) // sw + 1) if OW - 1 - coff >= 0 else 0
                    for i in range(H):
                        oh = i * sh - pt + r * dh
                        if oh < 0 or oh >= OH:
                            continue
                        orow = plane[oh]
                        srow = src[i * W:(i + 1) * W]
                        for j in range(j0, j1):
                            orow[j * sw + coff] += srow[j]
            flat = plane.reshape(OH * OW)
            apply_row(flat, b[k], act)
