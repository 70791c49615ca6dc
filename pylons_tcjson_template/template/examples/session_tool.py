#!/usr/bin/env python3
"""Read this application's Beaker session, or set one key of it, from Python 3.

What a second service does to share the login with the Pylons application,
with nothing but the standard library: read beaker.session.* from the INI
file, check the cookie's signature, get the record ``<prefix><id>:session``
(one JSON object) from Tokyo Tyrant, and set a key with one call of the
application's lib/tcjson.lua inside Tyrant ("merge", under the record's
lock): neither side loses the other's change, no other byte is rewritten.

    python3 examples/session_tool.py development.ini COOKIE get
    python3 examples/session_tool.py development.ini COOKIE set KEY JSON_VALUE

COOKIE is the Cookie header ("a=1; myapp=<value>") or the cookie's value.
get prints the record as stored; set stores JSON_VALUE as written.
Exit status, as examples/session-tool.mjs: 0 done, 2 bad usage or settings
(or a value the application could not load), 3 cookie refused (forged,
malformed, or two session cookies), 4 no live session (never saved, logged
out, expired), 5 record not readable here, 7 Tokyo Tyrant unavailable,
8 Tyrant without lib/tcjson.lua (set only).  6 is no longer used (it meant
a session held by a lock record).
"""
import configparser
import hashlib
import hmac
import json
import math
import os
import re
import socket
import struct
import sys
import time
from types import SimpleNamespace

EXIT_USAGE, EXIT_COOKIE, EXIT_NO_SESSION = 2, 3, 4
EXIT_UNREADABLE, EXIT_TYRANT, EXIT_NO_EXTENSION = 5, 7, 8
MAX_DEPTH, MAX_VALUES = 32, 20000       # what the application loads (lib/records.py)
NO_SESSION = 'no such session: never saved, logged out or purged'


class Failure(Exception):
    """Failure(exit status, one-line message): ends the program."""


def read_settings(ini_path, section='app:main'):
    """beaker.session.* as paster reads them (%(here)s: the file's folder)."""
    here = os.path.dirname(os.path.abspath(ini_path))
    parser = configparser.ConfigParser(defaults={'here': here, '__file__': ini_path},
                                       strict=False)        # paste allows repeated options

    def option(name, default=None):
        value = parser.get(section, 'beaker.session.' + name, fallback=default)
        if value is None:
            raise Failure(EXIT_USAGE, '%s sets no beaker.session.%s' % (ini_path, name))
        return value

    try:
        if not parser.read(ini_path, encoding='utf-8') or not parser.has_section(section):
            raise Failure(EXIT_USAGE, '%s: cannot read it, or it has no [%s]' % (ini_path, section))
        url = option('url')
        settings = SimpleNamespace(prefix=option('prefix', 'beaker:'), secret=option('secret'),
                                   cookie_name=option('key', 'beaker.session.id'))
        for name, default in [('connect_timeout', '1'), ('io_timeout', '2'), ('timeout', '0'),
                              ('max_session_size', '1048576')]:
            setattr(settings, name, float(option(name, default)))
    except (configparser.Error, UnicodeError) as exc:       # e.g. a stray %
        raise Failure(EXIT_USAGE, '%s: %s' % (ini_path, str(exc).splitlines()[0]))
    except ValueError:
        raise Failure(EXIT_USAGE, '%s: a beaker.session number is not a number' % ini_path)
    if any(mark in url for mark in '|;,'):      # 'a:1|b:2;c:3': beyond this example
        raise Failure(EXIT_USAGE, 'beaker.session.url %s names several servers; this '
                      'example talks to one host:port' % url)
    host, _, port = url.strip().rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Failure(EXIT_USAGE, 'beaker.session.url %s is not host:port' % url)
    settings.host, settings.port = host.strip('[]'), int(port)     # [::1]:1978
    settings.max_session_size = int(settings.max_session_size)
    return settings


def session_id_from(cookie, settings):
    """The session id inside Beaker's signed cookie: 40 hex digits of
    HMAC-SHA1(secret, id), then the id (32 hex digits), maybe in quotes.
    Only the holder of the secret can make a pair that matches."""
    value, name = cookie.strip(), settings.cookie_name
    if '=' in value:                                    # a whole Cookie header
        pairs = [part.partition('=') for part in re.sub(r'(?i)^cookie:', '', value).split(';')]
        found = [val for key, _, val in pairs if key.strip() == name]
        if not found:
            raise Failure(EXIT_COOKIE, 'the Cookie header has no %s cookie' % name)
        # Beaker uses the last of several, another program may use the first:
        # each would act on a different session, both validly signed.
        if len(found) > 1:
            raise Failure(EXIT_COOKIE, 'the Cookie header has %d %s cookies and Beaker uses '
                          'the last one: send one only' % (len(found), name))
        value = found[0]
    value = value.strip().strip('"')
    if not re.fullmatch('[0-9a-f]{72}', value):
        raise Failure(EXIT_COOKIE, 'malformed session cookie: expected 40 hex digits of '
                      'signature, then a session id of 32')
    signature, session_id = value[:40], value[40:]
    expected = hmac.new(settings.secret.encode('utf-8'), session_id.encode('ascii'),
                        hashlib.sha1).hexdigest()
    # compare_digest takes as long for a near miss as for a wild guess: the
    # timing does not tell an attacker how many digits were right.
    if not hmac.compare_digest(expected, signature):
        raise Failure(EXIT_COOKIE, 'forged session cookie: the signature does not match '
                      'beaker.session.secret')
    return session_id


def parse(data, depth, status, what, hint=''):
    """(value, values it counts) of UTF-8 JSON `data` at level `depth` (the
    record's is 1), or Failure(status, "<what> <why>") if the application
    would not load it: NaN, Infinity, more than MAX_VALUES values, and
    what count() refuses."""
    def refuse(reason):
        raise Failure(status, '%s %s' % (what, reason))

    def number(text):                               # as large as 1e999: inf, as in a double
        double = float(text)
        return int(text) if text.lstrip('-').isdigit() and not math.isinf(double) else double
    try:
        value = json.loads(data.decode('utf-8-sig'), parse_int=number, parse_float=number,
                           parse_constant=lambda name: refuse('is not JSON' + hint))
    except RecursionError:
        refuse('is nested deeper than %d levels' % MAX_DEPTH)
    except ValueError:                              # bad UTF-8 too
        refuse('is not JSON' + hint)
    values = count(value, depth, refuse)
    if values > MAX_VALUES:
        refuse('holds more than %d values' % MAX_VALUES)
    return value, values


def count(value, depth, refuse):
    """The values in `value` as the application counts them (an empty array
    or object twice); refuse(why) for a number beyond a double's range, or
    arrays and objects nested deeper than MAX_DEPTH."""
    if isinstance(value, float) and math.isinf(value):
        refuse('holds a number too large for a double')
    if not isinstance(value, (dict, list)):
        return 1
    if depth > MAX_DEPTH:
        refuse('is nested deeper than %d levels' % MAX_DEPTH)
    children = value.values() if isinstance(value, dict) else value
    return 1 + (sum(count(child, depth + 1, refuse) for child in children) or 1)


# Tokyo Tyrant's binary protocol.  A request: the magic byte 0xC8, a command
# byte, big-endian 32-bit numbers (the fields' lengths; ext's options too),
# then the fields.
# Answers used here: the status byte 0, a 32-bit length and a value; or the
# single byte 1 (no such record, or a failed call).
GET, EXT = 0x30, 0x68
RECORD_LOCK = 1        # ext option: run the Lua function alone for its key


class Tyrant:
    """One connection; every failure becomes Failure(EXIT_TYRANT)."""

    def __init__(self, settings):
        self.where, self.io_timeout = '%s:%d' % (settings.host, settings.port), settings.io_timeout
        try:
            self.sock = socket.create_connection((settings.host, settings.port),
                                                 settings.connect_timeout)
        except socket.timeout:
            raise self.unavailable('no connection within %gs' % settings.connect_timeout)
        except OSError as exc:
            raise self.unavailable('cannot connect: %s' % (exc.strerror or exc))
        self.sock.settimeout(settings.io_timeout)
        self.answers = self.sock.makefile('rb')

    def unavailable(self, reason):
        return Failure(EXIT_TYRANT, 'Tokyo Tyrant at %s is unavailable (%s)' % (self.where, reason))

    def get(self, key):
        """The record's bytes, or None if there is none."""
        return self.ask(struct.pack('>BBI', 0xC8, GET, len(key)) + key)

    def ext(self, function, key, value, options):
        """Call a Lua function of ttserver -ext: its answer, or None if it failed."""
        return self.ask(struct.pack('>BBIIII', 0xC8, EXT, len(function), options, len(key),
                                    len(value)) + function + key + value)

    def ask(self, request):
        try:
            self.sock.sendall(request)
            if self.read(1) != b'\0':
                return None
            return self.read(struct.unpack('>I', self.read(4))[0])
        except socket.timeout:
            raise self.unavailable('no answer within io_timeout=%gs' % self.io_timeout)
        except OSError as exc:
            raise self.unavailable('connection lost: %s' % exc)

    def read(self, size):
        data = self.answers.read(size)
        if len(data) < size:
            raise self.unavailable('the server closed the connection')
        return data


def live_record(raw, settings):
    """(the session as a dict, its values counted), or Failure if it is
    gone, expired, or a record the application would not load either."""
    if raw is None:
        raise Failure(EXIT_NO_SESSION, NO_SESSION)
    if len(raw) > settings.max_session_size:
        raise Failure(EXIT_UNREADABLE, 'the session record is over beaker.session.max_session_size')
    record, values = parse(raw, 1, EXIT_UNREADABLE, 'the session record')
    if not isinstance(record, dict):
        raise Failure(EXIT_UNREADABLE, 'the session record is not a JSON object')
    for name in ('_accessed_time', '_creation_time', '_expires'):
        stamp = record.get(name, 0)
        if type(stamp) not in (int, float) or not 0 <= stamp < 1e11:
            raise Failure(EXIT_UNREADABLE, 'the session record has a %s that is not a Unix '
                          'time' % name)
    if record.get('tcjson') == 'beaker-opaque':
        raise Failure(EXIT_UNREADABLE, 'the session is encrypted by Beaker '
                      '(beaker.session.encrypt_key): only the Pylons application can read it')
    # Tyrant deletes nothing by itself: an expired record stays until the
    # purge runs.  Beaker would ignore it and start a new session.
    now = time.time()
    if now > record.get('_expires', now):
        raise Failure(EXIT_NO_SESSION, 'the session has expired (_expires has passed)')
    if settings.timeout and now - record.get('_accessed_time', now) > settings.timeout:
        raise Failure(EXIT_NO_SESSION, 'the session has expired (idle over beaker.session.timeout)')
    return record, values


def set_key(tyrant, settings, record_key, key, text, added):
    """Set one key of the session to the JSON `text`, as written."""
    # Is lib/tcjson.lua there, in the version this program speaks?
    probe = tyrant.ext(b'probe', b'', b'', 0)       # {"tcjson":1,...}; None: no script
    try:
        version = json.loads(probe)['tcjson']
    except (TypeError, ValueError, KeyError):       # no answer, or not that JSON
        version = None
    if version != 1:
        raise Failure(EXIT_NO_EXTENSION, 'Tokyo Tyrant at %s runs without the application\'s '
                      'lib/tcjson.lua (ttserver -ext); nothing was written' % tyrant.where)
    # The session as it is now: alive, readable, and with room for the value
    # (which replaces the key's old value, if any: already checked).
    record, values = live_record(tyrant.get(record_key), settings)
    if values + added - (count(record[key], 2, None) if key in record else 0) > MAX_VALUES:
        raise Failure(EXIT_USAGE, 'the session would hold more than %d values; nothing was '
                      'written' % MAX_VALUES)
    # One merge under the record's lock: {"set": {name: value}, "limit": bytes}
    # changes that member of the record as it is then, keeping every other byte.
    request = '{"set":{%s:%s},"limit":%d}' % (json.dumps(key, ensure_ascii=False), text.strip(),
                                              settings.max_session_size)
    answer = tyrant.ext(b'merge', record_key, request.encode('utf-8'), RECORD_LOCK)
    if answer == b'missing':                        # logged out since the get
        raise Failure(EXIT_NO_SESSION, NO_SESSION)
    if answer == b'too large':
        raise Failure(EXIT_USAGE, 'the session would be over beaker.session.max_session_size '
                      '(%d bytes); nothing was written' % settings.max_session_size)
    if answer != b'ok':
        raise Failure(EXIT_UNREADABLE, 'lib/tcjson.lua refused the change: the stored record '
                      'is unreadable (the server log says why); nothing was written')


def main(ini=None, cookie=None, command=None, key=None, text=None, *extra):
    try:
        if extra or not (command == 'get' and key is None or command == 'set' and text is not None):
            raise Failure(EXIT_USAGE, 'usage: INI COOKIE get | INI COOKIE set KEY JSON_VALUE')
        # Bytes that are not UTF-8 become U+FFFD, as Node.js reads its arguments.
        key, text = (arg and os.fsencode(arg).decode('utf-8', 'replace') for arg in (key, text))
        if command == 'set' and (key.startswith('_') or key == 'tcjson'):
            raise Failure(EXIT_USAGE, '%s is reserved: Beaker and the backend keep their own '
                          'data in "tcjson" and in keys that start with _' % key)
        added = 0
        if command == 'set':                              # the value: level 2 of the record
            hint = ' (a string needs quotes: \'"%s"\')' % text
            added = parse(text.encode('utf-8'), 2, EXIT_USAGE, 'the value', hint)[1]
        settings = read_settings(ini)
        session_id = session_id_from(cookie, settings)
        record_key = ('%s%s:session' % (settings.prefix, session_id)).encode('utf-8')
        tyrant = Tyrant(settings)
        with tyrant.sock:
            if command == 'get':
                raw = tyrant.get(record_key)
                live_record(raw, settings)
                print(raw.decode('utf-8-sig'))            # as stored, byte order mark dropped
            else:
                set_key(tyrant, settings, record_key, key, text, added)
                print('stored %s = %s' % (key, text.strip()))
    except Failure as failure:
        status, message = failure.args
        sys.stderr.write('%s: %s\n' % (os.path.basename(sys.argv[0]), message))
        return status
    return 0


if __name__ == '__main__':
    sys.exit(main(*sys.argv[1:]))
