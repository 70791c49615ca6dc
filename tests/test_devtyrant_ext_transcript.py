"""Replay tests/data/tyrant-1.1.41-ext.txt, a real ttserver's answers to the
ext command (with the probe script, tcjson.lua, broken scripts) and to
requests at its limits, against tcjson-tyrant, byte for byte.

Each section runs on a fresh server as the file says; the update log's
records (sid, mid, body) are compared too.  Where $TCJSON_TTSERVER names a
ttserver built with Lua, the file is also replayed against it: a check
that the recording still holds.  tests/record_ext_transcript.py writes the
file again from such a ttserver.
"""
import os

import pytest

import ext_transcript
from pylons_tcjson_template.devtyrant.launcher import find_ttserver

SECTIONS = ext_transcript.parse()
NAMES = [section.name for section in SECTIONS]


def test_the_file_has_every_section_and_step_kind():
    assert NAMES == ['probe', 'tcjson', 'syntax-error', 'runtime-error', 'missing-file',
                     'no-ext', 'limits']
    kinds = set(step.kind for section in SECTIONS for step in section.steps)
    assert kinds == set(['exchange', 'open', 'restart', 'stop', 'ulog'])
    probe = SECTIONS[0]
    assert len([step for step in probe.steps if step.kind == 'exchange']) > 60
    assert len([step for step in probe.steps if step.kind == 'ulog'][0].expected) > 20


def test_the_parser_refuses_a_line_it_does_not_know(tmpdir):
    bogus = tmpdir.join('bogus.txt')
    bogus.write('[one] a section\nserver  ext=none\nget k   REQ c830\n    RSP 01\nsurprise\n')
    with pytest.raises(ValueError) as info:
        ext_transcript.parse(str(bogus))
    assert 'line 5' in str(info.value)


@pytest.mark.parametrize('section', SECTIONS, ids=NAMES)
def test_replay_against_tcjson_tyrant(section, tmpdir):
    assert ext_transcript.replay(section, str(tmpdir)) == []


TTSERVER = os.environ.get('TCJSON_TTSERVER', '').strip() and find_ttserver()


@pytest.mark.skipif(not TTSERVER, reason='TCJSON_TTSERVER names no ttserver (built with Lua)')
@pytest.mark.parametrize('section', SECTIONS, ids=NAMES)
def test_replay_against_ttserver(section, tmpdir):
    assert ext_transcript.replay(section, str(tmpdir), ttserver=TTSERVER) == []
