"""A Pylons-less WSGI app for the additional full-stack rows of the bench.

Not a substitute for the generated Pylons app: it shows what the session
backend costs under the same HTTP server without Pylons' own per-request
work.  Sessions as the generated app's middleware.py configures them:
ext:tcjson through user_sessions.UserSession; memory through Beaker's own
Session with its defaults (as the bench's generated-app memory row).
"""
from beaker.middleware import SessionMiddleware


def counter(environ, start_response):
    session = environ['beaker.session']
    session['count'] = session.get('count', 0) + 1
    session.save()
    body = ('visits: %d\n' % session['count']).encode('ascii')
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]


def make_app(global_conf, session_type='memory', session_url='', **local):
    options = {'session.type': session_type, 'session.key': 'bench_sid',
               'session.secret': 'mini-app-secret', 'session.timeout': '3600'}
    kwargs = {}
    if session_type == 'ext:tcjson':
        from pylons_tcjson_template import tcjson, user_sessions
        tcjson.register()
        options['session.url'] = session_url
        kwargs = {'session_class': user_sessions.UserSession,
                  'prefix': 'minibench:', 'pool_size': '10'}
    return SessionMiddleware(counter, options, **kwargs)
