"""The backend's modules form layers with one direction: each imports only
those before it in LIB_MODULES (connection, servers, records, session
class, per-user index, purge), never one above it."""
import ast
import os

from pylons_tcjson_template.template import LIB_MODULES

PACKAGE = os.path.join(os.path.dirname(__file__), os.pardir, 'pylons_tcjson_template')
PYTHON_MODULES = [name[:-3] for name in LIB_MODULES if name.endswith('.py')]


def sibling_imports(module):
    """The sibling modules `module` imports (``from . import x``,
    ``from .x import y``), wherever in the file."""
    with open(os.path.join(PACKAGE, module + '.py')) as source:
        tree = ast.parse(source.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split('.')[0])
            else:
                found.update(alias.name for alias in node.names)
    return found & set(PYTHON_MODULES)


def test_each_module_imports_only_the_layers_below_it():
    for position, module in enumerate(PYTHON_MODULES):
        below = set(PYTHON_MODULES[:position])
        assert sibling_imports(module) <= below, (module, sibling_imports(module) - below)


def test_the_layers_are_the_expected_ones():
    assert PYTHON_MODULES == ['tyrant', 'servers', 'records', 'tcjson', 'user_sessions',
                              'purge']
    assert sibling_imports('tcjson') == {'servers', 'tyrant', 'records'}
    assert 'user_sessions' in sibling_imports('purge')
