#!/usr/bin/env python3
"""Read and change this application's Beaker sessions from Python 3.

What a second service does to share the login with the Pylons application,
with nothing but the standard library: read beaker.session.* from the INI
file, check the cookie's signature, get the record ``<prefix><id>:session``
(one JSON object) from Tokyo Tyrant and, to change one key, take the lock
the application takes, so that neither side loses the other's change.

    python3 examples/session_tool.py development.ini COOKIE get
    python3 examples/session_tool.py development.ini COOKIE set KEY JSON_VALUE

COOKIE is the Cookie header ("a=1; myapp=<value>") or the cookie's value.
Exit status: 0 done, 2 bad usage or settings, 3 cookie refused, 4 no live
session (never saved, logged out, expired), 5 record not readable here,
6 session busy, 7 Tokyo Tyrant unavailable -- as examples/session-tool.mjs.
"""
import argparse
import configparser
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import struct
import sys
import time
from types import SimpleNamespace

EXIT_USAGE, EXIT_COOKIE, EXIT_NO_SESSION = 2, 3, 4
EXIT_UNREADABLE, EXIT_BUSY, EXIT_TYRANT = 5, 6, 7


class Failure(Exception):
    """Failure(exit status, one-line message): ends the program."""


def read_settings(ini_path, section='app:main'):
    """beaker.session.* as paster reads them (%(here)s: the file's folder)."""
    here = os.path.dirname(os.path.abspath(ini_path))
    parser = configparser.ConfigParser(defaults={'here': here, '__file__': ini_path},
                                       strict=False)        # paste allows repeated options

    def option(name, default=None):
        try:
            value = parser.get(section, 'beaker.session.' + name, fallback=default)
        except configparser.Error as exc:                  # e.g. a stray %
            raise Failure(EXIT_USAGE, '%s: %s' % (ini_path, str(exc).splitlines()[0]))
        if value is None:
            raise Failure(EXIT_USAGE, '%s sets no beaker.session.%s' % (ini_path, name))
        return value

    try:
        found = parser.read(ini_path, encoding='utf-8')
    except configparser.Error as exc:
        raise Failure(EXIT_USAGE, '%s: %s' % (ini_path, str(exc).splitlines()[0]))
    if not found or not parser.has_section(section):
        raise Failure(EXIT_USAGE, '%s: cannot read it, or it has no [%s]' % (ini_path, section))
    try:
        numbers = {name: float(option(name, default)) for name, default in
                   [('connect_timeout', '1'), ('io_timeout', '2'), ('timeout', '0'),
                    ('max_session_size', '1048576')]}
    except ValueError:
        raise Failure(EXIT_USAGE, '%s: a beaker.session number is not a number' % ini_path)
    url = option('url')
    if any(mark in url for mark in '|;,'):      # 'a:1|b:2;c:3': beyond this example
        raise Failure(EXIT_USAGE, 'beaker.session.url %r names several servers; this '
                      'example talks to one host:port' % url)
    host, _, port = url.strip().rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise Failure(EXIT_USAGE, 'beaker.session.url %r is not host:port' % url)
    return SimpleNamespace(host=host.strip('[]'), port=int(port),   # [::1]:1978
                           prefix=option('prefix', 'beaker:'),
                           cookie_name=option('key', 'beaker.session.id'),
                           secret=option('secret'), **numbers)


def session_id_from(cookie, settings):
    """The session id inside Beaker's signed cookie: 40 hex digits of
    HMAC-SHA1(secret, id), then the id (32 hex digits), maybe in quotes.
    Only the holder of the secret can make a pair that matches."""
    value = cookie.strip()
    if '=' in value:                                    # a whole Cookie header
        value = re.sub(r'(?i)^cookie:', '', value)
        pairs = [part.strip().partition('=') for part in value.split(';')]
        found = [val for name, _, val in pairs if name == settings.cookie_name]
        if not found:
            raise Failure(EXIT_COOKIE, 'the Cookie header has no %r cookie' % settings.cookie_name)
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


# Tokyo Tyrant's binary protocol.  A request: the magic byte 0xC8, a command
# byte, the big-endian 32-bit length of each field, then the fields.  Every
# answer starts with a status byte, 0 for success; get's goes on with the
# value's length and the value.  Requests sent together ("pipelined") are
# answered in order, all in one round trip.
GET, PUT, PUTKEEP, OUT = 0x30, 0x10, 0x11, 0x20


def request(command, *fields):
    return struct.pack('>BB%dI' % len(fields), 0xC8, command,
                       *map(len, fields)) + b''.join(fields)


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

    def pipeline(self, *requests):
        """Send (command, field...) requests at once; return their answers
        in order: get's value (None: no such record), else True for success."""
        self.io(self.sock.sendall, b''.join(request(*fields) for fields in requests))
        return [self.value() if fields[0] == GET else self.ok() for fields in requests]

    def ok(self):
        return self.read(1) == b'\0'

    def value(self):
        return self.read(struct.unpack('>I', self.read(4))[0]) if self.ok() else None

    def read(self, size):
        data = self.io(self.answers.read, size)
        if len(data) < size:
            raise self.unavailable('the server closed the connection')
        return data

    def io(self, call, *args):
        try:
            return call(*args)
        except socket.timeout:
            raise self.unavailable('no answer within io_timeout=%gs' % self.io_timeout)
        except OSError as exc:
            raise self.unavailable('connection lost: %s' % exc)


def live_record(raw, settings):
    """The session as a dict, or Failure if it is gone, expired or opaque."""
    if raw is None:
        raise Failure(EXIT_NO_SESSION, 'no such session: never saved, logged out or purged')
    try:
        record = json.loads(raw.decode('utf-8'))
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise Failure(EXIT_UNREADABLE, 'the session record is not a JSON object')
    if record.get('tcjson') == 'beaker-opaque':
        raise Failure(EXIT_UNREADABLE, 'the session is encrypted by Beaker '
                      '(beaker.session.encrypt_key): only the Pylons application can read it')
    # Tyrant deletes nothing by itself: an expired record stays until the
    # purge runs.  Beaker would ignore it and start a new session.
    now = time.time()
    expires, accessed = (record.get(name) for name in ('_expires', '_accessed_time'))
    if isinstance(expires, (int, float)) and now > expires:
        raise Failure(EXIT_NO_SESSION, 'the session has expired (_expires has passed)')
    if settings.timeout and isinstance(accessed, (int, float)) and \
            now - accessed > settings.timeout:
        raise Failure(EXIT_NO_SESSION, 'the session has expired (idle over beaker.session.timeout)')
    return record


def lock_and_read(tyrant, lock_key, record_key, lifetime):
    """Take the session's lock, the record the Pylons application creates
    before it writes: putkeep fails while it exists.  Returns (the record
    as it is now, the time.monotonic() at which the lock lapses)."""
    owner = '%s/%d/%s' % (socket.gethostname(), os.getpid(), secrets.token_hex(6))
    deadline, pause = time.monotonic() + lifetime, 0.002
    while True:
        taken_at = time.monotonic()
        lock = {'tcjson': 'lock', 'owner': owner, '_expires': time.time() + lifetime}
        taken, record = tyrant.pipeline((PUTKEEP, lock_key, json.dumps(lock).encode()),
                                        (GET, record_key))
        if taken:
            return record, taken_at + lifetime
        held, = tyrant.pipeline((GET, lock_key))
        try:
            alive = json.loads(held)['_expires'] >= time.time()
        except (ValueError, KeyError, TypeError):
            alive = False                         # junk (or gone): nobody's lock
        if held is not None and not alive:        # its holder died: take it over
            tyrant.pipeline((OUT, lock_key))
            continue
        if time.monotonic() + pause > deadline:
            raise Failure(EXIT_BUSY, 'the session is busy: its lock stayed taken for '
                          'io_timeout=%gs; try again' % lifetime)
        if held is not None:                      # else it was released meanwhile
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def set_key(tyrant, settings, session_id, key, value):
    """Change one key of the session, leaving every other key as it is."""
    record_key = ('%s%s:session' % (settings.prefix, session_id)).encode()
    lock_key = ('%slock:%s:session' % (settings.prefix, session_id)).encode()
    raw, lapses_at = lock_and_read(tyrant, lock_key, record_key, settings.io_timeout)
    try:
        record = live_record(raw, settings)              # as read under the lock
        record[key] = value
        data = json.dumps(record, ensure_ascii=False, separators=(',', ':'), allow_nan=False)
        data = data.encode('utf-8')
        if len(data) > settings.max_session_size:    # the application could not load it
            raise Failure(EXIT_USAGE, 'the session would be %d bytes, over beaker.session.'
                          'max_session_size; nothing was written' % len(data))
        if time.monotonic() >= lapses_at:      # another program may hold it by now
            raise Failure(EXIT_BUSY, 'the lock lapsed before the write; nothing was written')
        lapses_at = 0                          # put and unlock in one round trip
        stored, _ = tyrant.pipeline((PUT, record_key, data), (OUT, lock_key))
        if not stored:
            raise Failure(EXIT_TYRANT, 'Tokyo Tyrant refused to store the session')
    finally:
        if time.monotonic() < lapses_at:       # failed before the write: unlock
            tyrant.pipeline((OUT, lock_key))


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description="Read or change this application's Beaker session in Tokyo Tyrant.")
    parser.add_argument('ini', help="the application's INI file (development.ini)")
    parser.add_argument('cookie', help='the Cookie header, or the session cookie value')
    commands = parser.add_subparsers(dest='command', required=True)
    commands.add_parser('get', help='print the session as JSON')
    setter = commands.add_parser('set', help='set one key of the session')
    setter.add_argument('key')
    setter.add_argument('value', help="a JSON value: 42, true, '\"text\"', '[1, 2]'")
    args = parser.parse_args(argv)
    if args.command == 'set':
        try:
            args.value = json.loads(args.value)
        except ValueError:
            parser.error('%r is not JSON; quote a string: \'"%s"\'' % (args.value, args.value))
        if args.key.startswith('_') or args.key == 'tcjson':
            parser.error('%r is reserved: Beaker and the backend keep their own data in '
                         '"tcjson" and in keys that start with _' % args.key)
    return args


def main(argv=None):
    args = parse_arguments(argv)
    try:
        settings = read_settings(args.ini)
        session_id = session_id_from(args.cookie, settings)
        tyrant = Tyrant(settings)
        with tyrant.sock:
            if args.command == 'get':
                record_key = '%s%s:session' % (settings.prefix, session_id)
                raw, = tyrant.pipeline((GET, record_key.encode()))
                record = live_record(raw, settings)
                print(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False))
            else:
                set_key(tyrant, settings, session_id, args.key, args.value)
                print('stored %s = %s' % (args.key, json.dumps(args.value, ensure_ascii=False)))
    except Failure as failure:
        status, message = failure.args
        sys.stderr.write('%s: %s\n' % (os.path.basename(sys.argv[0]), message))
        return status
    return 0


if __name__ == '__main__':
    sys.exit(main())
