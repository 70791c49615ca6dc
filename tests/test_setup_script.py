"""README's setup command: idempotent, and clear when Python 2.7 is missing."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = os.path.join(ROOT, 'setup.sh')


def run_setup(**env):
    full_env = dict(os.environ, SKIP_APT='1', **env)
    proc = subprocess.Popen(['bash', SETUP], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    return proc.returncode, out.decode('utf-8'), err.decode('utf-8')


def test_the_venv_runs_python_2_7():
    assert sys.version_info[:2] == (2, 7)
    python = os.path.join(ROOT, '.venv', 'bin', 'python')
    version = subprocess.check_output([python, '-V'], stderr=subprocess.STDOUT)
    assert version.startswith(b'Python 2.7')


def test_rerun_is_a_no_op_that_says_so():
    code, out, err = run_setup(PYTHON27=os.path.join(ROOT, '.venv', 'bin', 'python'))
    assert code == 0, err
    assert 'exists: Python 2.7' in out
    assert 'up to date' in out
    steps = [line for line in out.splitlines() if line.startswith('==> ')]
    assert len(steps) >= 4          # it says what it does, step by step


def test_missing_python_gives_instructions_not_a_traceback():
    code, out, err = run_setup(PYTHON27='/bin/false')
    assert code != 0
    assert 'no working python2.7' in err
    assert 'pyenv install 2.7' in err
    assert 'Traceback' not in err


def test_peers_only_when_asked_and_the_tests_that_skip_without_them(tmpdir):
    """Without --all the benchmark and browser peers are not installed; on
    a PATH without them the script names the tests that will skip."""
    bin_dir = tmpdir.mkdir('bin')
    for tool in ('bash', 'dirname', 'basename', 'cat', 'md5sum', 'cut', 'sed', 'python3'):
        found = subprocess.check_output(['bash', '-c', 'command -v ' + tool]).strip()
        bin_dir.join(tool).mksymlinkto(found)
    code, out, err = run_setup(PYTHON27=os.path.join(ROOT, '.venv', 'bin', 'python'),
                               PATH=str(bin_dir))
    assert code == 0, err
    listed = out.split('not installed (./setup.sh --all installs them)', 1)[1]
    for peer, tests in (('memcached', 'ext:memcached rows'), ('redis-server', 'ext:redis rows'),
                        ('wrk', 'full-stack (wrk) rows'),
                        ('chromium', 'tests/test_template_browser.py')):
        assert '%s: ' % peer in listed and tests in listed, (peer, out)
    script = open(SETUP).read()
    assert 'apt_install libtokyocabinet9 tokyocabinet-bin lua5.1 "${peers[@]}"' in script
    assert script.count('"${peers[@]}"') == 2          # installed with --all only
    assert '--all' in open(os.path.join(ROOT, '.ci', 'run')).read()
