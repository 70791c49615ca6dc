"""A small application serving sessions from Tyrant, run as a process of its
own by the pair tests (tests/test_tyrant_pairs.py) so that several
application processes share one store, as deployments do.

    python tests/pair_app.py URL PORT [CONNECT_TIMEOUT IO_TIMEOUT]

GET /inc?k=NAME   adds 1 to the session's NAME and answers {"value": N}
GET /read?k=NAME  answers {"value": N} (0 if none), changing nothing
GET /logout       session.delete()
Every answer also carries the session's id; 503 when Tyrant is unavailable.
"""
import json
import sys
import urlparse

from beaker.middleware import SessionMiddleware
from paste import httpserver

from pylons_tcjson_template import tcjson, user_sessions


def app(environ, start_response):
    session = environ['beaker.session']
    query = dict(urlparse.parse_qsl(environ.get('QUERY_STRING', '')))
    path = environ['PATH_INFO']
    if path == '/inc':
        session[query['k']] = session.get(query['k'], 0) + 1
        session.save()
    elif path == '/logout':
        session.delete()
    body = json.dumps({'id': session.id, 'value': session.get(query.get('k'), 0)})
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]


class Unavailable(object):
    """503 for an outage, whether it came while reading the session or
    while writing it (when the response starts)."""

    def __init__(self, wrapped):
        self.wrapped = wrapped

    def __call__(self, environ, start_response):
        try:
            return self.wrapped(environ, start_response)
        except tcjson.TyrantUnavailable as exc:
            body = json.dumps({'error': str(exc)})
            start_response('503 Service Unavailable', [('Content-Type', 'application/json'),
                                                       ('Content-Length', str(len(body)))])
            return [body]


def main(url, port, connect_timeout='0.5', io_timeout='1.0'):
    tcjson.register()
    config = {'session.type': 'ext:tcjson', 'session.url': url, 'session.timeout': '600',
              'session.secret': 'pair-app', 'session.connect_timeout': connect_timeout,
              'session.io_timeout': io_timeout, 'session.pool_size': '32',
              'session.invalidate_corrupt': 'false'}
    wrapped = Unavailable(SessionMiddleware(app, config,
                                            session_class=user_sessions.UserSession))
    server = httpserver.serve(wrapped, host='127.0.0.1', port=int(port), start_loop=False,
                              use_threadpool=True, threadpool_workers=32,
                              request_queue_size=128)
    sys.stdout.write('serving on %s\n' % port)
    sys.stdout.flush()
    server.serve_forever()


if __name__ == '__main__':
    main(*sys.argv[1:])
