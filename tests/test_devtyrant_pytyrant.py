"""tcjson-tyrant through the PyTyrant 1.1.17 client, on both kinds of store.

Each test runs twice: against an in-memory server and against one on a .tch
file, so the two stores must agree with each other as well as with the
client.  Both servers live for the whole module and are emptied (raw VANISH,
0xC8 0x72) before each test.

PyTyrant 1.1.17 was written for Tyrant 1.1.17: it numbers vanish/copy/
restore 0x71/0x72/0x73, where 1.1.41 has optimize/vanish/copy, so its
vanish(), clear(), copy() and restore() are never called here.  It also has
the addint/adddouble command codes but no method for them; those tests build
the request with PyTyrant's own codes and read the answer with its socket
helpers.
"""
import socket
import struct

import pytest
import pytyrant

from pylons_tcjson_template.devtyrant.launcher import TyrantProcess

from conftest import vanish


@pytest.fixture(scope='module', params=['*', 'casket.tch'], ids=['memory', 'tch'])
def module_server(request, tmpdir_factory):
    dbpath = request.param
    if dbpath != '*':
        dbpath = str(tmpdir_factory.mktemp('pytyrant').join(dbpath))
    server = TyrantProcess(dbpath, ttserver=False).start()
    yield server
    server.stop()


@pytest.fixture
def db(module_server):
    """A PyTyrant connected to an emptied server."""
    vanish(module_server)
    client = pytyrant.PyTyrant.open(module_server.host, module_server.port)
    client.t.sock.settimeout(10)
    yield client
    client.close()


def test_put_get_delete(db):
    db['k'] = 'v'
    db['bin\x00key'] = '\x00\xff' * 3
    assert db['k'] == 'v'
    assert db['bin\x00key'] == '\x00\xff' * 3
    assert 'k' in db and 'other' not in db
    db['k'] = 'replaced'
    assert db['k'] == 'replaced'
    del db['k']
    with pytest.raises(KeyError):
        db['k']
    with pytest.raises(KeyError):
        del db['k']
    assert db.get_size('bin\x00key') == 6
    with pytest.raises(KeyError):
        db.get_size('k')


def test_large_value_round_trip(db):
    value = ''.join(chr(i % 251) for i in range(3 * 1024 * 1024))
    db['big'] = value
    assert db['big'] == value
    assert db.get_size('big') == len(value)


def test_empty_key_and_value(db):
    db[''] = ''
    assert db[''] == ''
    assert len(db) == 1


def test_concat_and_shift_left(db):
    db.concat('c', 'ab')                # putcat on a missing key creates it
    db.concat('c', 'cd')
    assert db['c'] == 'abcd'
    db.concat('c', 'XY', width=4)       # putshl keeps the last 4 bytes
    assert db['c'] == 'cdXY'
    db.concat('new', 'xyz', width=2)    # a new record is stored whole, as ttserver does
    assert db['new'] == 'xyz'
    db.concat('new', 'Q', width=2)      # ... and cut only when appended to
    assert db['new'] == 'zQ'


def test_putkeep(db):
    assert db.setdefault('k', 'first') == 'first'
    assert db.setdefault('k', 'second') == 'first'
    with pytest.raises(pytyrant.TyrantError):
        db.t.putkeep('k', 'third')
    assert db['k'] == 'first'


def test_putnr_then_read_on_the_same_connection(db):
    db.t.putnr('nr', 'value')
    assert db['nr'] == 'value'


def test_mget_and_multi_get(db):
    db.update({'a': '1', 'b': '22', 'c': '333'})
    assert sorted(db.t.mget(['a', 'nope', 'c'])) == [('a', '1'), ('c', '333')]
    assert db.t.mget([]) == []
    assert db.multi_get(['c', 'a', 'b', 'nope']) == ['333', '1', '22', None]


def test_misc_putlist_getlist_outlist(db):
    db.multi_set([('x', '1'), ('y', '2'), ('z', '3')])
    assert len(db) == 3
    assert db.t.misc('getlist', 0, ['x', 'missing', 'z']) == ['x', '1', 'z', '3']
    db.multi_del(['x', 'z', 'missing'])
    assert db.keys() == ['y']


def test_misc_unknown_function_fails(db, module_server):
    # ttserver answers 01 00000000; PyTyrant reads only the 01 and raises,
    # leaving four bytes unread, so this uses a connection of its own.
    other = pytyrant.PyTyrant.open(module_server.host, module_server.port)
    try:
        with pytest.raises(pytyrant.TyrantError):
            other.t.misc('nosuchfunction', 0, [])
    finally:
        other.close()


def test_fwmkeys(db):
    for key in ('user:1', 'user:2', 'user:3', 'other', 'use'):
        db[key] = 'v'
    assert sorted(db.prefix_keys('user:')) == ['user:1', 'user:2', 'user:3']
    assert len(db.prefix_keys('user:', 2)) == 2
    assert db.prefix_keys('user:', 0) == []
    assert db.prefix_keys('zz') == []
    assert sorted(db.t.fwmkeys('', 10)) == sorted(['user:1', 'user:2', 'user:3',
                                                  'other', 'use'])


def _addint(db, key, num):
    sock = db.t.sock
    pytyrant.socksend(sock, [struct.pack('>BBIi', pytyrant.MAGIC, pytyrant.C.addint,
                                         len(key), num), key])
    pytyrant.socksuccess(sock)
    return struct.unpack('>i', pytyrant.sockrecv(sock, 4))[0]


def _adddouble(db, key, num):
    integ = int(num)
    fract = int(round((num - integ) * 1e12))
    sock = db.t.sock
    pytyrant.socksend(sock, [struct.pack('>BBIqq', pytyrant.MAGIC, pytyrant.C.adddouble,
                                         len(key), integ, fract), key])
    pytyrant.socksuccess(sock)
    integ, fract = struct.unpack('>qq', pytyrant.sockrecv(sock, 16))
    return integ + fract / 1e12


def test_addint(db):
    assert _addint(db, 'n', 5) == 5
    assert _addint(db, 'n', -7) == -2
    assert db['n'] == struct.pack('<i', -2)      # stored as a native int
    assert _addint(db, 'n', 0) == -2
    assert _addint(db, 'wrap', 2 ** 31 - 1) == 2 ** 31 - 1
    assert _addint(db, 'wrap', 2) == -2 ** 31 + 1    # C int overflow
    with pytest.raises(pytyrant.TyrantError):
        _addint(db, 'n', -2 ** 31 + 2)    # INT_MIN is Tokyo Cabinet's error value


def test_addint_on_a_value_that_is_not_four_bytes_fails(db):
    # Tokyo Cabinet refuses: the record must hold exactly one int.
    db['five'] = 'abcde'
    db['three'] = 'abc'
    for key in ('five', 'three'):
        with pytest.raises(pytyrant.TyrantError):
            _addint(db, key, 1)
        assert db[key] in ('abcde', 'abc')
    db['four'] = 'atXY'                 # 4 bytes: read as a little-endian int
    assert _addint(db, 'four', 1) == struct.unpack('<i', 'btXY')[0]


def test_adddouble(db):
    assert _adddouble(db, 'd', 1.5) == 1.5
    assert _adddouble(db, 'd', 2.25) == 3.75
    assert _adddouble(db, 'd', -4.0) == -0.25
    assert struct.unpack('<d', db['d']) == (-0.25,)
    db['short'] = 'abc'
    with pytest.raises(pytyrant.TyrantError):
        _adddouble(db, 'short', 1.0)


def test_iteration(db):
    keys = ['key%03d' % i for i in range(150)]
    for key in keys:
        db[key] = key.upper()
    assert sorted(db.keys()) == keys
    assert sorted(db) == keys
    db.t.iterinit()
    assert db.t.iternext() in keys


def test_iternext_after_the_end_and_without_iterinit(db):
    db['only'] = '1'
    assert db.keys() == ['only']
    with pytest.raises(pytyrant.TyrantError):
        db.t.iternext()


def test_iterate_and_delete_every_key(db):
    # A common clean-up loop: the iterator must survive the deletions.
    for i in range(300):
        db['k%d' % i] = 'v'
    seen = []
    for key in db.iterkeys():
        seen.append(key)
        del db[key]
    assert len(seen) == 300 and len(set(seen)) == 300
    assert len(db) == 0


def test_rnum_size_and_sync(db):
    assert len(db) == 0
    empty_size = db.t.size()
    for i in range(100):
        db['key%d' % i] = 'x' * 100
    assert len(db) == 100
    assert db.t.size() > empty_size
    db.sync()
    for i in range(50):
        del db['key%d' % i]
    assert len(db) == 50


def test_stat(db):
    db['a'] = '1'
    db['b'] = '2'
    stats = db.get_stats()
    assert stats['version'] == '1.1.41'
    assert stats['rnum'] == '2'
    assert int(stats['pid']) > 0
    assert int(stats['cnt_put']) >= 2


def test_ext_is_not_available(db):
    with pytest.raises(pytyrant.TyrantError):
        db.call_func('myfunc', 'k', 'v')


def test_pytyrant_vanish_is_not_the_1_1_41_vanish_code():
    # PyTyrant 1.1.17 sends 0x71 for vanish(); in Tyrant 1.1.41 that is
    # OPTIMIZE, which takes a parameter string, and VANISH is 0x72 (the
    # code PyTyrant uses for copy()).  This is why no test calls vanish(),
    # clear(), copy() or restore() through PyTyrant.  Checked without a
    # server: the bytes go to one end of a socket pair.
    ours, theirs = socket.socketpair()
    try:
        theirs.sendall(b'\x00')                 # the success byte it waits for
        pytyrant.Tyrant(ours).vanish()
        sent = bytearray(theirs.recv(16))
        assert sent[0] == 0xC8
        assert sent[1] != 0x72
        assert sent[1] == 0x71
    finally:
        ours.close()
        theirs.close()


def test_adddouble_on_infinity_and_nan(db, module_server):
    # Values no client should store, but one may: the server must answer
    # (ttserver casts inf to INT64_MIN; NaN is Tokyo Cabinet's error value)
    # and keep serving.
    db['inf'] = struct.pack('<d', float('inf'))
    db['huge'] = struct.pack('<d', 1e300)
    db['nan'] = struct.pack('<d', float('nan'))
    for key in ('inf', 'huge'):
        sock = db.t.sock
        pytyrant.socksend(sock, [struct.pack('>BBIqq', pytyrant.MAGIC, pytyrant.C.adddouble,
                                             len(key), 1, 0), key])
        pytyrant.socksuccess(sock)
        assert struct.unpack('>qq', pytyrant.sockrecv(sock, 16)) == (-2 ** 63, -2 ** 63)
    with pytest.raises(pytyrant.TyrantError):
        _adddouble(db, 'nan', 1.0)
    assert _adddouble(db, 'fine', 0.1) == 0.1
    assert len(db) == 4
