"""The installed package: the native module, the shipped grammar, the two packages."""
from importlib import resources

import mdl
import neuromorph


def test_native_module_builds_and_reports():
    info = neuromorph.build_info()
    assert info["version"] == neuromorph.__version__
    assert info["ir_version"] == mdl.IR_VERSION
    assert isinstance(info["cuda_compiler_found"], bool)


def test_grammar_ships_inside_the_package():
    shipped = resources.files("mdl").joinpath("mdl.lark")
    assert shipped.is_file()
    assert "header" in shipped.read_text()
