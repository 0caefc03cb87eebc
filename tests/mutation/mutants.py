"""The planted bugs of the mutation smoke job (tests/mutation/run.sh; docs/testing.md).

Each mutant is one plausible bug: a list of exact find/replace patches on the source tree. The
runner plants one mutant at a time in a copy of the tree, rebuilds that copy (Python-only
mutants are copied into the build without a rebuild) and runs the suite against it; a mutant
the suite does not fail on "survives". A patch whose `old` text is not found exactly once is
reported as "stale" (the code moved on: update the snippet), never skipped silently.

`hint` names the tests expected to kill the mutant; the runner runs them first, then (when they
pass) the whole suite, so the verdict is the suite's either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Patch:
    path: str   # relative to the repository root
    old: str    # exact text, found exactly once
    new: str


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    patches: tuple[Patch, ...]
    hint: tuple[str, ...] = field(default=())

    @property
    def python_only(self) -> bool:
        return all(p.path.startswith(("src/mdl/", "python/neuromorph/")) for p in self.patches)


MUTANTS: tuple[Mutant, ...] = (
    # The activation formulas are written once (core/formulas.h) for the scalar reference (math
    # policy StdMath) and the float32 SIMD loops of simd.cpp (FastMath): a bug in one backend
    # only is planted on the policy.
    Mutant("elu-alpha", "ELU derivative ignores alpha (scalar reference and SIMD twin)", (
        Patch("csrc/core/formulas.h",
              "else if constexpr (A == Act::Elu) return z > T(0) ? T(1) : p * M::exp(z < T(0) ? z : T(0));",
              "else if constexpr (A == Act::Elu) return z > T(0) ? T(1) : M::exp(z < T(0) ? z : T(0));"),
    ), ("tests/test_gradients.py",)),
    Mutant("elu-alpha-simd", "ELU derivative ignores alpha in the float32 SIMD kernel only", (
        Patch("csrc/core/formulas.h",
              "else if constexpr (A == Act::Elu) return z > T(0) ? T(1) : p * M::exp(z < T(0) ? z : T(0));",
              "else if constexpr (A == Act::Elu) return z > T(0) ? T(1) : "
              "(std::is_same_v<M, StdMath> ? p : T(1)) * M::exp(z < T(0) ? z : T(0));"),
    ), ("tests/test_gradients.py", "tests/test_fast_paths.py")),
    Mutant("leaky-slope-simd", "leaky ReLU derivative uses the default slope in the SIMD kernel", (
        Patch("csrc/core/formulas.h",
              "else if constexpr (A == Act::ReluLeaky) return z > T(0) ? T(1) : p;",
              "else if constexpr (A == Act::ReluLeaky) return z > T(0) ? T(1) : (std::is_same_v<M, StdMath> ? p : T(0.01));"),
    ), ("tests/test_gradients.py", "tests/test_fast_paths.py")),
    Mutant("raster-self", "attn2d raster mask excludes the cell itself", (
        Patch("csrc/cpu/attn2d_kernels.cpp", "!(raster && s2 > s)", "!(raster && s2 >= s)"),
    ), ("tests/test_struct_nodes.py",)),
    Mutant("wiring-power", "column wiring cost ignores `power`", (
        Patch("csrc/cpu/column.cpp", "mean += (wire_[i] = std::pow(D_[i], pw));",
              "mean += (wire_[i] = D_[i]);"),
    ), ("tests/test_struct_nodes.py",)),
    Mutant("serialize-size", "model-file tensor byte-size check removed", (
        Patch("csrc/core/serialize.cpp", "if (e < b || e > data_size || e - b != p.size * esize)",
              "if (e < b || e > data_size)"),
    ), ("tests/test_save_load.py",)),
    Mutant("sgd-blas-bias", "fused BLAS SGD step skips the bias", (
        Patch("csrc/cpu/gemm.cpp",
              "1.0f, W, in);\n    for (int r = 0; r < rows; ++r)\n"
              "      for (int o = 0; o < out; ++o) b[o] -= lr * dz[size_t(r) * out + o];",
              "1.0f, W, in);\n    for (int r = 0; r < rows; ++r)\n"
              "      for (int o = 0; o < out; ++o) (void)b;"),
    ), ("tests/test_fast_paths.py",)),
    Mutant("sgd-blas-half", "fused BLAS SGD step halves the weight step", (
        Patch("csrc/cpu/gemm.cpp", "out, in, rows, -lr, dz, out, u, in,",
              "out, in, rows, -0.5f * lr, dz, out, u, in,"),
    ), ("tests/test_fast_paths.py",)),
    Mutant("crlf-snippet", "diagnostic snippet keeps the `\\r` of a CRLF line", (
        Patch("src/mdl/diagnostics.py",
              "return [p[:-1] if p.endswith(\"\\r\") else p for p in parts]", "return parts"),
    ), ("tests/test_golden_diagnostics.py",)),
    Mutant("delay-self", "a merge reading its own node is not delayed", (
        Patch("src/mdl/passes.py", "            if id(m) in on_stack:\n",
              "            if id(m) in on_stack and m is not gn:\n"),
    ), ("tests/test_compiler.py",)),
    Mutant("delay-stack", "nodes stay on the walk's stack after their subtree is done", (
        Patch("src/mdl/passes.py", "            on_stack.discard(id(gn))\n", "            pass\n"),
    ), ("tests/test_compiler.py",)),
    Mutant("delay-parent", "only a merge directly above its target (or itself) is delayed", (
        Patch("src/mdl/passes.py", "            if id(m) in on_stack:\n",
              "            if m is gn or (stack and stack[-1][0] is m):\n"),
    ), ("tests/test_compiler.py",)),
    # Not a mutant: visiting the main successor before the split branches. A node's ancestors
    # on the walk are the same in any sibling order, so the delayed edges are too (equivalent).
    Mutant("adam-bias-correction", "Adam drops the second-moment bias correction", (
        Patch("csrc/core/optim.h", "/ bc1, std::sqrt(bc2), c.kind", "/ bc1, 1.0, c.kind"),
    ), ("tests/test_optimizers.py",)),
    Mutant("adam-first-moment", "Adam's first moment accumulates the raw gradient", (
        Patch("csrc/core/formulas.h", "m = b1 * m + (T(1) - b1) * d;", "m = b1 * m + d;"),
    ), ("tests/test_optimizers.py",)),
    Mutant("adamw-decay", "AdamW weight decay not scaled by the learning rate", (
        Patch("csrc/core/formulas.h", "if (decoupled) p *= T(1) - rate * wd;",
              "if (decoupled) p *= T(1) - wd;"),
    ), ("tests/test_optimizers.py",)),
    Mutant("huber-delta", "Huber gradient outside delta drops delta", (
        Patch("csrc/core/formulas.h", "case Loss::Huber: return ax <= p ? x : p * sgn;",
              "case Loss::Huber: return ax <= p ? x : sgn;"),
    ), ("tests/test_gradients.py",)),
    Mutant("energy-dense-vjp", "energy dense synapse VJP drops one weight-gradient term", (
        Patch("csrc/cpu/energy_synapse.h",
              "        mm<T>(true, false, n0, nl, rows, g[0], n0, Ib[1], nl, G + W, nl);              // W̄ += g0ᵀ Ī1\n",
              ""),
    ), ("tests/test_energy.py",)),
    Mutant("deferred-rate", "the deferred update of HAMUX's clamped-layer weights at 1.001 x the rate", (
        Patch("csrc/cpu/deferred.h", "T(-rate), d.A", "T(-1.001 * rate), d.A"),
    ), ("tests/test_energy_deferred.py",)),
    Mutant("deferred-zero", "a deferring step never zeroes the deferred weights' gradients", (
        Patch("csrc/cpu/model.cpp", "step(x, e, true, deferred_zero_);", "step(x, e, true, true);"),
    ), ("tests/test_energy_deferred.py",)),
    Mutant("deferred-unchecked", "the update beside the deferred products keeps non-finite values", (
        Patch("csrc/cpu/update.h", "    if (check && !all)\n      refuse(g, false,",
              "    if (false)\n      refuse(g, false,"),
    ), ("tests/test_energy_deferred.py",)),
)
