"""Lost updates: concurrent HTTP requests of one session, each changing
its own key.

`hammer()` starts `threads` threads that each send `requests` GETs of
``<bump_url>?key=t<N>`` (the served app adds 1 to ``session['t<N>']`` and
saves) with the same session cookie, all released at once; then it reads
the stored counts back through ``counts_url`` (a JSON object of the t<N>
keys).  Every answered bump that the stored count does not show was lost:
another request's save overwrote it.  A request that failed (an HTTP
error, a timeout) is counted as an error, not as lost.
"""
from __future__ import division

import json
import threading
import time

try:
    from urllib2 import Request, URLError, urlopen
except ImportError:                      # pragma: no cover (py3)
    from urllib.request import Request, urlopen
    from urllib.error import URLError


def _get(url, cookie, timeout):
    return urlopen(Request(url, headers={'Cookie': cookie}), timeout=timeout).read()


def _bump_many(url, cookie, count, timeout, start, outcome):
    start.wait()
    for _ in range(count):
        try:
            _get(url, cookie, timeout)
            outcome['answered'] += 1
        except (URLError, IOError) as exc:   # HTTPError is a URLError
            outcome['errors'] += 1
            outcome['last_error'] = str(exc)


def hammer(bump_url, counts_url, cookie, threads=8, requests=100, timeout=30):
    """Run the threads; return answered, errors, stored and lost counts."""
    start = threading.Event()
    outcomes, workers = [], []
    for number in range(threads):
        outcome = {'key': 't%d' % number, 'answered': 0, 'errors': 0, 'last_error': ''}
        outcomes.append(outcome)
        worker = threading.Thread(target=_bump_many, args=(
            '%s?key=%s' % (bump_url, outcome['key']), cookie, requests, timeout,
            start, outcome))
        worker.daemon = True
        worker.start()
        workers.append(worker)
    began = time.time()
    start.set()
    for worker in workers:
        worker.join()
    seconds = time.time() - began
    stored = json.loads(_get(counts_url, cookie, timeout))
    answered = sum(o['answered'] for o in outcomes)
    kept = sum(int(stored.get(o['key'], 0)) for o in outcomes)
    return {'threads': threads, 'requests': requests, 'answered': answered,
            'errors': sum(o['errors'] for o in outcomes), 'stored': kept,
            'lost': answered - kept, 'seconds': seconds,
            'last_error': ' '.join(o['last_error'] for o in outcomes if o['last_error'])[:300]}
