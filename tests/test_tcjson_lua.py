"""lib/tcjson.lua's own tests (tests/lua/test_tcjson.lua), run under the
Lua ttserver links (Debian's lua5.1) and under the Lua 5.4 that lupa embeds
(what tcjson-tyrant runs it with).  The same file runs inside the servers
in the rest of the suite."""
import os
import subprocess

import lupa

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), 'pylons_tcjson_template', 'tcjson.lua')
TESTS = os.path.join(HERE, 'lua', 'test_tcjson.lua')


def test_under_lua_5_1():
    output = subprocess.check_output(['lua5.1', TESTS, SCRIPT], stderr=subprocess.STDOUT)
    assert output.startswith('ok ') and '(Lua 5.1)' in output, output


def test_under_lua_5_4():
    runtime = lupa.LuaRuntime()
    assert runtime.eval('_VERSION') == 'Lua 5.4'
    printed = []
    runtime.globals()['print'] = printed.append
    runtime.globals().SCRIPT = SCRIPT
    runtime.execute(open(TESTS).read())
    assert printed and printed[-1].startswith('ok ') and '(Lua 5.4)' in printed[-1], printed
