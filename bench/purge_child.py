"""Run purge.purge_expired in its own process; print one JSON line.

    python bench/purge_child.py URL PREFIX [KWARGS_JSON]

The line holds the purge's return value, its wall time, and the process's
peak memory: VmHWM from /proc/self/status and ru_maxrss, plus VmRSS before
the purge started (the interpreter and imports), so peak - start is what the
purge itself needed.
"""
from __future__ import print_function

import json
import resource
import sys
import time


def proc_status_kb(field):
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except IOError:
        pass
    return None


def main(argv):
    url, prefix = argv[1], argv[2]
    kwargs = json.loads(argv[3]) if len(argv) > 3 else {}
    from pylons_tcjson_template import purge
    start_rss = proc_status_kb('VmRSS')
    started = time.time()
    result = purge.purge_expired(url, prefix, **kwargs)
    elapsed = time.time() - started
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = repr(result)
    print(json.dumps({
        'result': result, 'seconds': elapsed, 'start_rss_kb': start_rss,
        'vmhwm_kb': proc_status_kb('VmHWM'),
        'ru_maxrss_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }))


if __name__ == '__main__':
    main(sys.argv)
