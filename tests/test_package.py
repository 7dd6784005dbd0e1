"""The package surface: plain functions, and the module paths from before the subpackages' rename."""
import types

import ganinv


def test_invert_and_edit_are_plain_functions():
    assert type(ganinv.invert) is types.FunctionType
    assert type(ganinv.edit) is types.FunctionType
    assert type(ganinv) is types.ModuleType  # no module class swap
    assert ganinv.invert is ganinv.inversion.invert
    assert ganinv.edit is ganinv.editing.edit


def test_old_module_paths_still_import_the_same_objects():
    from ganinv.edit import FINDERS
    from ganinv.invert import METHODS
    from ganinv.invert.base import InversionResult
    from ganinv.invert.result import InversionResult as from_result

    import ganinv.edit.sefa  # noqa: F401 - a submodule by its old dotted name
    assert METHODS is ganinv.METHODS and FINDERS is ganinv.FINDERS
    assert InversionResult is from_result is ganinv.InversionResult
    # Importing an old path never rebinds the functions.
    assert type(ganinv.invert) is types.FunctionType and type(ganinv.edit) is types.FunctionType


def test_nothing_offered_that_does_not_exist():
    for name in ganinv.__all__:
        assert hasattr(ganinv, name), name
    assert not hasattr(ganinv, "bench")
