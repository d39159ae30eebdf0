"""AVX-512 VNNI int8 dot products (``vpdpbusd``) reached through an LLVM intrinsic.

``vpdpbusd acc, a, b`` adds, to each 32-bit lane of acc, the four products of
that lane's unsigned bytes of ``a`` with the signed bytes of ``b``: 64 u8 x s8
multiply-adds per instruction, four times what ``vpmaddwd`` does.  LLVM does
not form it from plain loops, so ``dot4x4_u8s8`` is written in LLVM IR: a
4 x 4 block of dot products over ``nchunks`` 64-byte chunks,

    out[4*u + v] = sum_(k < 64*nchunks) int32(a[a_off + u*lda + k]) * int32(b[b_off + v*ldb + k])

with a uint8 and b int8, sixteen zmm accumulators, reduced at the end.
Callers pad the reduction to a multiple of 64 with zeros and must only call
this on CPUs with ``avx512vnni`` (``HAS_VNNI``); cached code is keyed by the
CPU, so the cache never hands it to another machine.
"""
import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

HAS_VNNI = "+avx512vnni" in llvm.get_host_cpu_features().flatten().split(",")


@intrinsic
def dot4x4_u8s8(typingctx, a, a_off, lda, b, b_off, ldb, nchunks, out):
    sig = types.void(a, types.intp, types.intp, b, types.intp, types.intp, types.intp, out)

    def codegen(context, builder, signature, args):
        a_arr = context.make_array(signature.args[0])(context, builder, args[0])
        b_arr = context.make_array(signature.args[3])(context, builder, args[3])
        o_arr = context.make_array(signature.args[7])(context, builder, args[7])
        a_off, lda, b_off, ldb, nchunks = args[1], args[2], args[4], args[5], args[6]
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        v16 = ir.VectorType(i32, 16)
        intp = a_off.type
        a_ptr = builder.bitcast(a_arr.data, i8p)
        b_ptr = builder.bitcast(b_arr.data, i8p)
        mod = builder.module
        dp = cgutils.get_or_insert_function(mod, ir.FunctionType(v16, [v16, v16, v16]),
                                            "llvm.x86.avx512.vpdpbusd.512")
        red = cgutils.get_or_insert_function(mod, ir.FunctionType(i32, [v16]),
                                             "llvm.vector.reduce.add.v16i32")
        zero = ir.Constant(v16, None)
        pre = builder.block
        loop = builder.append_basic_block("vnni.loop")
        done = builder.append_basic_block("vnni.done")
        builder.cbranch(builder.icmp_signed(">", nchunks, ir.Constant(intp, 0)), loop, done)

        builder.position_at_end(loop)
        k = builder.phi(intp)
        k.add_incoming(ir.Constant(intp, 0), pre)
        accs = []
        for _ in range(16):
            p = builder.phi(v16)
            p.add_incoming(zero, pre)
            accs.append(p)
        byte = builder.mul(k, ir.Constant(intp, 64))

        def load(base, off, ld, row):
            idx = builder.add(builder.add(off, builder.mul(ld, ir.Constant(intp, row))), byte)
            ptr = builder.bitcast(builder.gep(base, [idx]), v16.as_pointer())
            return builder.load(ptr, align=1)
        av = [load(a_ptr, a_off, lda, u) for u in range(4)]
        bv = [load(b_ptr, b_off, ldb, v) for v in range(4)]
        new = [builder.call(dp, [accs[4 * u + v], av[u], bv[v]])
               for u in range(4) for v in range(4)]
        k1 = builder.add(k, ir.Constant(intp, 1))
        end = builder.block
        k.add_incoming(k1, end)
        for p, n in zip(accs, new):
            p.add_incoming(n, end)
        builder.cbranch(builder.icmp_signed("<", k1, nchunks), loop, done)

        builder.position_at_end(done)
        finals = []
        for i in range(16):  # phis first: LLVM wants them at the top of the block
            f = builder.phi(v16)
            f.add_incoming(zero, pre)
            f.add_incoming(new[i], end)
            finals.append(f)
        o_ptr = builder.bitcast(o_arr.data, i32.as_pointer())
        for i, f in enumerate(finals):
            builder.store(builder.call(red, [f]), builder.gep(o_ptr, [ir.Constant(intp, i)]))
        return context.get_dummy_value()

    return sig, codegen
