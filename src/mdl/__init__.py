"""`mdl`: the Neuromorph Model Description Language compiler.

    import mdl
    ir = mdl.compile_text("/xavier,zero/ (x, 2) (h, 4, <tanh>) (y, 1, <sigmoid>, <mse>)")
    ir.to_json()

Errors raise `mdl.MDLError` (every error of the file, each located); warnings are
`mdl.MDLWarning`s and also sit on `ir.warnings`.
"""
from .diagnostics import Diagnostic, MDLError, MDLWarning, Span
from .errors import NeuromorphError
from .ir import IR, IR_FORMAT, IR_VERSION, STAGES, compile_file, compile_text, load_ir
from .dot import to_dot

__version__ = "0.1.0"
__all__ = ["compile_text", "compile_file", "load_ir", "to_dot", "IR", "MDLError", "MDLWarning",
           "NeuromorphError", "Diagnostic", "Span", "IR_FORMAT", "IR_VERSION", "STAGES",
           "__version__"]
