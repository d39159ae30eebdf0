"""int8 convolution on the GPU with dp4a: four u8 x s8 products and their sum per instruction.

Same arithmetic as the CPU family (kernels/cpu/int8.py): per-channel symmetric
int8 weights, uint8 activations with zero point zx, exact int32 accumulation,

    acc[k, p] = sum_(r,s,c) wq[k, r, s, c] * xq[p*stride + (r,s)*dilation, c]
    y[k, p]   = act(float32(acc - zx * wsum[k]) * scale[k] + b[k] (+ res))

optionally requantized, or (``raw``) the int32 accumulators themselves (int8
GEMM).  The input is channels-last with each group's channels padded to a
multiple of four and viewed as int32 words, (N, HP, WP, G, Cq); weights
(K, R*S*Cq) words; so every dp4a reads one word of each.  ``dp4a.u32.s32`` is
emitted as inline PTX; on the CUDA simulator (which runs Python, not PTX) the
same sum is computed byte by byte in int32.  One thread per output element.
Launch: grid (ceil(OH*OW / 128), N*K), block 128.

The float epilogue rounds each step as the integer reference does: the scale's
product and the bias's sum are separate roundings (``fmul_rn``/``fadd_rn``,
which the compiler may not contract into one fused multiply-add, as it would
``a * b + c`` by default on the GPU), and requantization rounds half to even
(``rintf``).  On the simulator the same steps are plain float32 operations.
"""
from llvmlite import ir
from numba import config, cuda, float32, int32, types

if config.ENABLE_CUDASIM:
    @cuda.jit(device=True)
    def dp4a(a, b, c):
        s = int(c)
        for i in range(4):
            ab = (int(a) >> (8 * i)) & 0xFF
            bb = (int(b) >> (8 * i)) & 0xFF
            if bb >= 128:
                bb -= 256
            s += ab * bb
        return int32(s)

    @cuda.jit(device=True)
    def mul_rn(a, b):
        return float32(a) * float32(b)

    @cuda.jit(device=True)
    def add_rn(a, b):
        return float32(a) + float32(b)

    @cuda.jit(device=True)
    def rint(v):
        return float32(round(v))  # Python's round: half to even
else:
    try:
        from numba.cuda.extending import intrinsic
    except ImportError:  # older numba-cuda
        from numba.extending import intrinsic

    @intrinsic
    def dp4a(typingctx, a, b, c):
        """c + sum_i u8(a)[i] * s8(b)[i], one dp4a.u32.s32 instruction."""
        sig = types.int32(types.int32, types.int32, types.int32)

        def codegen(context, builder, signature, args):
            i32 = ir.IntType(32)
            asm = ir.InlineAsm(ir.FunctionType(i32, [i32, i32, i32]),
                               "dp4a.u32.s32 $0, $1, $2, $3;", "=r,r,r,r")
            return builder.call(asm, args)
        return sig, codegen

    from numba.cuda import libdevice

    @cuda.jit(device=True, inline=True)
    def mul_rn(a, b):
        return libdevice.fmul_rn(a, b)

    @cuda.jit(device=True, inline=True)
    def add_rn(a, b):
        return libdevice.fadd_rn(a, b)

    @cuda.jit(device=True, inline=True)
    def rint(v):
        return libdevice.rintf(v)


@cuda.jit
def conv2d_int8(xw, ww, wsum, scale, b, zx, R, S, sh, sw, dh, dw, act, res, has_res, y, yq, yacc,
                mode, inv_sy, zy, qmin, qmax):
    """xw (N, HP, WP, G, Cq) int32 words of uint8; ww (K, R*S*Cq) int32 words of int8;
    mode 0: float y (N, K, P); 1: quantized yq (N, K, P); 2: raw int32 yacc (N, K, P)."""
    N, HP, WP, G, Cq = xw.shape
    K = ww.shape[0]
    Kg = K // G
    if mode == 0:
        P = y.shape[2]
    elif mode == 1:
        P = yq.shape[2]
    else:
        P = yacc.shape[2]
    OW = (WP - dw * (S - 1) - 1) // sw + 1
    p = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    nk = cuda.blockIdx.y
    n = nk // K
    k = nk - n * K
    if p >= P:
        return
    g = k // Kg
    oh = p // OW
    ow = p - oh * OW
    acc = int32(0)
    for r in range(R):
        ih = oh * sh + r * dh
        for s in range(S):
            iw = ow * sw + s * dw
            base = (r * S + s) * Cq
            for q in range(Cq):
                acc = dp4a(xw[n, ih, iw, g, q], ww[k, base + q], acc)
    if mode == 2:
        yacc[n, k, p] = acc
        return
    v = add_rn(mul_rn(float32(acc - zx * wsum[k]), scale[k]), b[k])
    if has_res:
        v = add_rn(v, res[n, k, p])
    if act == 1:
        v = max(v, float32(0))
    elif act == 2:
        v = min(max(v, float32(0)), float32(6))
    if mode == 1:
        qv = add_rn(rint(mul_rn(v, inv_sy)), float32(zy))
        yq[n, k, p] = min(max(qv, qmin), qmax)
    else:
        y[n, k, p] = v
