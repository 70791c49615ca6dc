#!/usr/bin/env node
// Read this application's Beaker session, or set one key of it, from Node.js.
//
// What a second service does to share the login with the Pylons application,
// with nothing but Node's standard library: read beaker.session.* from the INI
// file, check the cookie's signature, get the record <prefix><id>:session (one
// JSON object) from Tokyo Tyrant, and set a key with one call of the
// application's lib/tcjson.lua inside Tyrant ("merge", under the record's
// lock): neither side loses the other's change, no other byte is rewritten.
//
//   node examples/session-tool.mjs development.ini COOKIE get
//   node examples/session-tool.mjs development.ini COOKIE set KEY JSON_VALUE
//
// COOKIE is the Cookie header ("a=1; myapp=<value>") or the cookie's value.
// get prints the record as stored; set stores JSON_VALUE as written.
// Exit status, as examples/session_tool.py: 0 done, 2 bad usage or settings
// (or a value the application could not load), 3 cookie refused (forged,
// malformed, or two session cookies), 4 no live session (never saved, logged
// out, expired), 5 record not readable here, 7 Tokyo Tyrant unavailable,
// 8 Tyrant without lib/tcjson.lua (set only).  6 is no longer used (it meant
// a session held by a lock record).
import { createHmac, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const EXIT = { usage: 2, cookie: 3, noSession: 4, unreadable: 5, tyrant: 7, noExtension: 8 };
const MAX_DEPTH = 32, MAX_VALUES = 20000; // what the application loads (lib/records.py)
const NO_SESSION = 'no such session: never saved, logged out or purged';

class Failure extends Error { // ends the program with a message and an exit status
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}
const fail = (status, message) => { throw new Failure(status, message); };

// One section of a paster INI file as Python's ConfigParser reads it: `name =
// value`, # and ; comments, indented lines continue a value, and %(name)s
// stands for another option of the section, of [DEFAULT], or `here` (the
// file's folder).  Returns option(name) -> string or undefined.
function readIni(file, wanted) {
  const sections = { DEFAULT: {} };
  let section = null, last = null;
  for (const line of readFileSync(file, 'utf8').split(/\r?\n/)) {
    if (/^\s*([#;]|$)/.test(line)) continue;
    const header = line.match(/^\[(.+)\]\s*$/);
    const option = line.match(/^([^\s=:][^=:]*?)\s*[=:]\s*(.*)$/);
    if (header) [section, last] = [sections[header[1]] ??= {}, null];
    else if (/^\s/.test(line) && last) section[last] += '\n' + line.trim();
    else if (option && section) section[(last = option[1].toLowerCase())] = option[2].trim();
  }
  if (!sections[wanted]) fail(EXIT.usage, `${file} has no [${wanted}]`);
  const options = { here: path.dirname(path.resolve(file)), __file__: file,
                    ...sections.DEFAULT, ...sections[wanted] };
  const expand = (value, depth) => value.replace(/%%|%\(([^)]+)\)s/g, (match, name) => {
    if (match === '%%') return '%';
    const found = options[name.toLowerCase()];
    if (found === undefined || depth > 10) fail(EXIT.usage, `${file}: cannot expand ${match}`);
    return expand(found, depth + 1);
  });
  return (name) => (name in options ? expand(options[name], 0) : undefined);
}

function readSettings(file) {
  let ini;
  try {
    ini = readIni(file, 'app:main');
  } catch (error) {
    throw error instanceof Failure ? error : new Failure(EXIT.usage, `cannot read ${file}: ${error.message}`);
  }
  const option = (name, fallback) => {
    const value = ini(`beaker.session.${name}`) ?? fallback;
    if (value === undefined) fail(EXIT.usage, `${file} sets no beaker.session.${name}`);
    return value;
  };
  const number = (name, fallback) => {
    const value = Number(option(name, fallback));
    if (Number.isFinite(value)) return value;
    fail(EXIT.usage, `${file}: beaker.session.${name} is not a number`);
  };
  const url = option('url');
  if (/[|;,]/.test(url)) { // 'a:1|b:2;c:3': beyond this example
    fail(EXIT.usage, `beaker.session.url ${url} names several servers; this example talks to one host:port`);
  }
  const [, host, port] = url.trim().match(/^\[?(.+?)\]?:(\d+)$/) ?? []; // [::1]:1978 too
  if (!host || !(port > 0 && port < 65536)) fail(EXIT.usage, `beaker.session.url ${url} is not host:port`);
  return {
    host, port: Number(port), prefix: option('prefix', 'beaker:'),
    cookieName: option('key', 'beaker.session.id'), secret: option('secret'),
    connectTimeout: number('connect_timeout', '1'), ioTimeout: number('io_timeout', '2'),
    timeout: number('timeout', '0'), maxSessionSize: Math.trunc(number('max_session_size', '1048576')),
  };
}

// The session id inside Beaker's signed cookie: 40 hex digits of
// HMAC-SHA1(secret, id), then the id (32 hex digits), maybe in quotes. Only the
// holder of the secret can make a pair that matches.
function sessionIdFrom(cookie, settings) {
  let value = cookie.trim();
  const name = settings.cookieName;
  if (value.includes('=')) { // a whole Cookie header
    const pairs = value.replace(/^cookie:/i, '').split(';').map((part) => part.split('='));
    const found = pairs.filter(([key]) => key.trim() === name).map(([, ...rest]) => rest.join('='));
    if (!found.length) fail(EXIT.cookie, `the Cookie header has no ${name} cookie`);
    // Beaker uses the last of several, another program may use the first: each
    // would act on a different session, both validly signed.
    if (found.length > 1) {
      fail(EXIT.cookie, `the Cookie header has ${found.length} ${name} cookies and Beaker uses ` +
           'the last one: send one only');
    }
    value = found[0];
  }
  value = value.trim().replace(/^"|"$/g, '');
  if (!/^[0-9a-f]{72}$/.test(value)) {
    fail(EXIT.cookie, 'malformed session cookie: expected 40 hex digits of signature, then a session id of 32');
  }
  const [signature, sessionId] = [value.slice(0, 40), value.slice(40)];
  const expected = createHmac('sha1', settings.secret).update(sessionId).digest();
  // timingSafeEqual takes as long for a near miss as for a wild guess: the
  // timing does not tell an attacker how many digits were right.
  if (!timingSafeEqual(expected, Buffer.from(signature, 'hex'))) {
    fail(EXIT.cookie, 'forged session cookie: the signature does not match beaker.session.secret');
  }
  return sessionId;
}

// [value, values it counts] of UTF-8 JSON `data` (a Buffer) at level `depth`
// (the record's is 1), or Failure(status, "<what> <why>") if the application
// would not load it: NaN, Infinity, more than MAX_VALUES values, and what
// count() refuses. JSON.parse's numbers are doubles (9007199254740993 becomes
// ...992): this program only checks them, and never writes back what it parsed.
function parse(data, depth, status, what, hint = '') {
  const refuse = (reason) => fail(status, `${what} ${reason}`);
  let value;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data)); // drops a BOM
  } catch {
    refuse(`is not JSON${hint}`); // bad UTF-8 too
  }
  const values = count(value, depth, refuse);
  if (values > MAX_VALUES) refuse(`holds more than ${MAX_VALUES} values`);
  return [value, values];
}

// The values in `value` as the application counts them (an empty array or
// object twice); refuse(why) for a number beyond a double's range (JSON.parse
// makes 1e999 Infinity), or arrays and objects nested deeper than MAX_DEPTH.
function count(value, depth, refuse) {
  if (typeof value === 'number' && !Number.isFinite(value)) refuse('holds a number too large for a double');
  if (typeof value !== 'object' || value === null) return 1;
  if (depth > MAX_DEPTH) refuse(`is nested deeper than ${MAX_DEPTH} levels`);
  return 1 + (Object.values(value).reduce((sum, child) => sum + count(child, depth + 1, refuse), 0) || 1);
}

// Tokyo Tyrant's binary protocol. A request: the magic byte 0xC8, a command
// byte, big-endian 32-bit numbers (the fields' lengths; ext's options too),
// then the fields.
// Answers used here: the status byte 0, a 32-bit length and a value; or the
// single byte 1 (no such record, or a failed call).
const GET = 0x30, EXT = 0x68;
const RECORD_LOCK = 1; // ext option: run the Lua function alone for its key
const REASONS = { ECONNREFUSED: 'connection refused', ECONNRESET: 'the server reset the connection',
                  EPIPE: 'the server closed the connection' };

class Tyrant { // one connection; every failure becomes Failure(EXIT.tyrant)
  constructor({ host, port, ioTimeout }) {
    Object.assign(this, { where: `${host}:${port}`, ioTimeout, received: Buffer.alloc(0) });
    this.socket = net.connect({ host, port }).setNoDelay(true);
    // The idle timer runs only while we wait: for the connection, then for
    // each answer.  Running out, it destroys the socket with this message.
    this.socket.on('timeout', () => this.socket.destroy(new Error(this.waiting)));
    this.chunks = this.socket[Symbol.asyncIterator](); // what the server sends
  }

  async connect(connectTimeout) {
    this.waiting = `no connection within ${connectTimeout}s`;
    this.socket.setTimeout(connectTimeout * 1000);
    try {
      await once(this.socket, 'connect');
    } catch (error) {
      throw this.unavailable(REASONS[error.code] ?? error.message);
    }
    this.socket.setTimeout(0);
    return this;
  }

  unavailable(reason) {
    return new Failure(EXIT.tyrant, `Tokyo Tyrant at ${this.where} is unavailable (${reason})`);
  }

  get(key) { // the record's bytes, or null if there is none
    const k = Buffer.from(key); // strings as UTF-8
    return this.ask(GET, [k.length], k);
  }

  ext(name, key, value, options) { // a Lua function's answer, or null if the call failed
    const [n, k, v] = [name, key, value].map((text) => Buffer.from(text));
    return this.ask(EXT, [n.length, options, k.length, v.length], n, k, v);
  }

  async ask(command, numbers, ...fields) {
    const head = Buffer.alloc(2 + 4 * numbers.length);
    head.set([0xc8, command]);
    numbers.forEach((number, index) => head.writeUInt32BE(number, 2 + 4 * index));
    this.socket.write(Buffer.concat([head, ...fields])); // errors: in read()
    if ((await this.read(1))[0] !== 0) return null;
    return this.read((await this.read(4)).readUInt32BE(0));
  }

  async read(size) {
    this.waiting = `no answer within io_timeout=${this.ioTimeout}s`;
    this.socket.setTimeout(this.ioTimeout * 1000);
    try {
      while (this.received.length < size) {
        const { value, done } = await this.chunks.next();
        if (done) throw this.unavailable('the server closed the connection');
        this.received = Buffer.concat([this.received, value]);
      }
    } catch (error) {
      throw error instanceof Failure ? error : this.unavailable(REASONS[error.code] ?? error.message);
    } finally {
      this.socket.setTimeout(0);
    }
    const data = this.received.subarray(0, size);
    this.received = this.received.subarray(size);
    return data;
  }
}

// [the session as an object, its values counted], or a Failure if it is gone,
// expired, or a record the application would not load either.
function liveRecord(raw, settings) {
  if (raw === null) fail(EXIT.noSession, NO_SESSION);
  if (raw.length > settings.maxSessionSize) {
    fail(EXIT.unreadable, 'the session record is over beaker.session.max_session_size');
  }
  const [record, values] = parse(raw, 1, EXIT.unreadable, 'the session record');
  if (typeof record !== 'object' || record === null || Array.isArray(record)) {
    fail(EXIT.unreadable, 'the session record is not a JSON object');
  }
  for (const name of ['_accessed_time', '_creation_time', '_expires']) {
    const stamp = Object.hasOwn(record, name) ? record[name] : 0;
    if (typeof stamp !== 'number' || !(stamp >= 0 && stamp < 1e11)) {
      fail(EXIT.unreadable, `the session record has a ${name} that is not a Unix time`);
    }
  }
  if (record.tcjson === 'beaker-opaque') {
    fail(EXIT.unreadable, 'the session is encrypted by Beaker (beaker.session.encrypt_key): ' +
         'only the Pylons application can read it');
  }
  // Tyrant deletes nothing by itself: an expired record stays until the purge
  // runs. Beaker would ignore it and start a new session.
  const now = Date.now() / 1000;
  if (now > (record._expires ?? now)) fail(EXIT.noSession, 'the session has expired (_expires has passed)');
  if (settings.timeout && now - (record._accessed_time ?? now) > settings.timeout) {
    fail(EXIT.noSession, 'the session has expired (idle over beaker.session.timeout)');
  }
  return [record, values];
}

// Set one key of the session to the JSON `text`, as written.
async function setKey(tyrant, settings, recordKey, key, text, added) {
  // Is lib/tcjson.lua there, in the version this program speaks?
  const probe = await tyrant.ext('probe', '', '', 0); // {"tcjson":1,...}; null: no script
  let version;
  try {
    version = JSON.parse(probe).tcjson;
  } catch { /* no answer, or not JSON */ }
  if (version !== 1) {
    fail(EXIT.noExtension, `Tokyo Tyrant at ${tyrant.where} runs without the application's ` +
         'lib/tcjson.lua (ttserver -ext); nothing was written');
  }
  // The session as it is now: alive, readable, and with room for the value
  // (which replaces the key's old value, if any: already checked).
  const [record, values] = liveRecord(await tyrant.get(recordKey), settings);
  if (values + added - (Object.hasOwn(record, key) ? count(record[key], 2, null) : 0) > MAX_VALUES) {
    fail(EXIT.usage, `the session would hold more than ${MAX_VALUES} values; nothing was written`);
  }
  // One merge under the record's lock: {"set": {name: value}, "limit": bytes}
  // changes that member of the record as it is then, keeping every other byte.
  const request = `{"set":{${JSON.stringify(key)}:${text.trim()}},"limit":${settings.maxSessionSize}}`;
  const answer = (await tyrant.ext('merge', recordKey, request, RECORD_LOCK))?.toString();
  if (answer === 'missing') fail(EXIT.noSession, NO_SESSION); // logged out since the get
  if (answer === 'too large') {
    fail(EXIT.usage, 'the session would be over beaker.session.max_session_size ' +
         `(${settings.maxSessionSize} bytes); nothing was written`);
  }
  if (answer !== 'ok') {
    fail(EXIT.unreadable, 'lib/tcjson.lua refused the change: the stored record is unreadable ' +
         '(the server log says why); nothing was written');
  }
}

let tyrant;
try {
  const [ini, cookie, command, key, text, ...extra] = process.argv.slice(2);
  if (extra.length || !(command === 'get' && key === undefined || command === 'set' && text !== undefined)) {
    fail(EXIT.usage, 'usage: INI COOKIE get | INI COOKIE set KEY JSON_VALUE');
  }
  if (command === 'set' && (key.startsWith('_') || key === 'tcjson')) {
    fail(EXIT.usage, `${key} is reserved: Beaker and the backend keep their own data ` +
         'in "tcjson" and in keys that start with _');
  }
  let added = 0;
  if (command === 'set') { // the value: level 2 of the record
    [, added] = parse(Buffer.from(text), 2, EXIT.usage, 'the value', ` (a string needs quotes: '"${text}"')`);
  }
  const settings = readSettings(ini);
  const recordKey = `${settings.prefix}${sessionIdFrom(cookie, settings)}:session`;
  tyrant = await new Tyrant(settings).connect(settings.connectTimeout);
  if (command === 'get') {
    const raw = await tyrant.get(recordKey);
    liveRecord(raw, settings);
    console.log(new TextDecoder().decode(raw)); // as stored, byte order mark dropped
  } else {
    await setKey(tyrant, settings, recordKey, key, text, added);
    console.log(`stored ${key} = ${text.trim()}`);
  }
} catch (error) {
  if (!(error instanceof Failure)) throw error;
  console.error(`session-tool.mjs: ${error.message}`);
  process.exitCode = error.status;
} finally {
  tyrant?.socket.destroy();
}
