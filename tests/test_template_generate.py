"""`paster create -t pylons_tcjson`: what it writes, and what it refuses."""
import filecmp
import os
import re
import sys

import pytest

from test_template_support import (PASTER, develop_install, generate,
                                   paster_create, project_env, run)

import pylons_tcjson_template

SOURCE = os.path.dirname(os.path.abspath(pylons_tcjson_template.__file__))

EXPECTED_FILES = """
    setup.py setup.cfg MANIFEST.in README.txt development.ini test.ini
    MyApp.egg-info/paster_plugins.txt MyApp.egg-info/entry_points.txt
    myapp/__init__.py myapp/websetup.py myapp/commands.py
    myapp/config/__init__.py myapp/config/environment.py
    myapp/config/middleware.py myapp/config/routing.py
    myapp/config/deployment.ini_tmpl
    myapp/controllers/__init__.py myapp/controllers/error.py
    myapp/controllers/home.py myapp/controllers/session.py
    myapp/lib/__init__.py myapp/lib/app_globals.py myapp/lib/base.py
    myapp/lib/helpers.py myapp/lib/session_errors.py myapp/lib/tcjson.py
    myapp/lib/csrf.py myapp/lib/tyrant.py myapp/lib/servers.py
    myapp/lib/user_sessions.py
    myapp/lib/tcjson.lua
    myapp/model/__init__.py
    myapp/public/favicon.ico myapp/public/style.css
    myapp/templates/base.mako myapp/templates/home.mako
    myapp/templates/session.mako myapp/templates/error.mako
    myapp/tests/__init__.py myapp/tests/functional/__init__.py
    myapp/tests/functional/test_session.py myapp/tests/functional/test_home.py
""".split()


@pytest.fixture(scope='module')
def project(tmpdir_factory):
    return generate(tmpdir_factory.mktemp('defaults'), 'MyApp')


def all_files(root):
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            yield os.path.join(dirpath, name)


def ini_settings(path, section='app:main'):
    import ConfigParser
    parser = ConfigParser.RawConfigParser()
    parser.read(path)
    return dict(parser.items(section))


def test_layout(project):
    missing = [name for name in EXPECTED_FILES
               if not os.path.isfile(os.path.join(project, name))]
    assert not missing
    leftovers = [path for path in all_files(project)
                 if path.endswith(('_tmpl', '.pyc')) and
                 not path.endswith('deployment.ini_tmpl')]
    assert not leftovers


def test_single_source_modules_are_copied(project):
    from pylons_tcjson_template.template import LIB_MODULES
    lib = os.path.join(project, 'myapp', 'lib')
    assert {'tcjson.py', 'tcjson.lua', 'tyrant.py', 'servers.py',
            'user_sessions.py'} <= set(LIB_MODULES)
    template_lib = os.path.join(SOURCE, 'template', '+package+', 'lib')
    for name in LIB_MODULES:
        assert filecmp.cmp(os.path.join(SOURCE, name), os.path.join(lib, name),
                           shallow=False), name
        # ...and not duplicated inside the template tree.
        assert not os.path.exists(os.path.join(template_lib, name + '_tmpl')), name
        assert not os.path.exists(os.path.join(template_lib, name)), name


def test_development_tools_are_not_copied(project):
    """tcjson-tyrant and `paster tyrant` come from this package (the
    project's dev extra): lib/ holds what the running application needs."""
    lib = os.path.join(project, 'myapp', 'lib')
    assert not os.path.exists(os.path.join(lib, 'devtyrant'))
    for path in all_files(project):
        if path.endswith(('.py', '.txt', '.ini', '.cfg', '.mako')):
            assert 'lib/devtyrant' not in open(path).read(), path
            assert 'lib.devtyrant' not in open(path).read(), path
    setup_py = open(os.path.join(project, 'setup.py')).read()
    assert "extras_require={'dev': dev_requires}" in setup_py
    assert "'pylons_tcjson_template'" in setup_py


def pins(text):
    """{name: version} of the `name==version` lines of a constraints file."""
    found = {}
    for line in text.splitlines():
        if '==' in line and not line.startswith('#'):
            name, version = line.split('==')
            found[name.strip().lower()] = version.strip()
    return found


def test_constraints_come_from_the_one_list(project):
    from pylons_tcjson_template import template
    source = open(template.CONSTRAINTS).read()
    shared, repository_only = source.split("\n" + template.REPOSITORY_ONLY, 1)
    ours = pins(open(os.path.join(project, 'constraints.txt')).read())
    dev_pin = ours.pop('pylons_tcjson_template')
    assert dev_pin == template.template_version()
    assert ours == pins(shared)
    assert {'pylons', 'pastescript', 'tempita', 'waitress', 'nose', 'webtest'} <= set(ours)
    # The repository's own bench peers and test runner stay out.
    for name in ('pytest', 'redis', 'python-memcached'):
        assert name in repository_only and name not in ours, name
    setup_py = open(os.path.join(project, 'setup.py')).read()
    assert "python_requires='>=2.7,<3'" in setup_py


def test_setup_py_refuses_python_3(project):
    """`python setup.py develop` under Python 3 stops before it installs."""
    code, output = run(['python3', 'setup.py', 'develop', '--dry-run'], project)
    assert code != 0
    assert 'MyApp needs Python 2.7 (Pylons 1.0)' in output, output
    assert not os.path.exists(os.path.join(project, 'build'))


def test_no_template_syntax_left(project):
    for path in all_files(project):
        if path.endswith(('.py', '.ini', '.mako', '.txt', '.cfg', '.in')):
            text = open(path).read()
            assert '{{' not in text, path


def test_every_python_file_compiles(project):
    compiled = 0
    for path in all_files(project):
        if path.endswith('.py'):
            compile(open(path).read(), path, 'exec')
            compiled += 1
    assert compiled > 25


def test_default_settings(project):
    dev = ini_settings(os.path.join(project, 'development.ini'))
    assert dev['beaker.session.type'] == 'ext:tcjson'
    assert dev['beaker.session.url'] == '127.0.0.1:1978'
    assert dev['beaker.session.prefix'] == 'myapp:session:'
    assert dev['beaker.session.timeout'] == '3600'
    assert dev['beaker.session.key'] == 'myapp'
    assert dev['beaker.session.httponly'] == 'true'
    assert re.match(r'^[0-9a-f]{48}$', dev['beaker.session.secret'])
    assert re.match(r'^[0-9a-f]{48}$', dev['app_instance_secret'])
    assert dev['beaker.session.secret'] != dev['app_instance_secret']
    server = ini_settings(os.path.join(project, 'development.ini'), 'server:main')
    assert server['port'] == '5000'
    deployment = open(os.path.join(project, 'myapp', 'config',
                                   'deployment.ini_tmpl')).read()
    assert 'beaker.session.httponly = true' in deployment
    assert 'beaker.session.secure = true' in deployment
    assert 'set debug = false' in deployment
    # No error mail to a placeholder address (each 500 would try to send
    # one); the line stays, commented out, to be set to a real address.
    assert not re.search(r'^\s*email_to\s*=', deployment, re.M)
    assert '#email_to = ' in deployment
    plugins = open(os.path.join(project, 'MyApp.egg-info',
                                'paster_plugins.txt')).read().split()
    assert plugins == ['PasteScript', 'Pylons']
    entry_points = open(os.path.join(project, 'MyApp.egg-info',
                                     'entry_points.txt')).read()
    assert 'tyrant = myapp.commands:TyrantCommand' in entry_points
    assert 'tcjson-purge = myapp.commands:PurgeCommand' in entry_points


def test_secrets_differ_between_projects(project, tmpdir):
    other = generate(tmpdir, 'MyApp')
    ours = ini_settings(os.path.join(project, 'development.ini'))
    theirs = ini_settings(os.path.join(other, 'development.ini'))
    assert ours['beaker.session.secret'] != theirs['beaker.session.secret']


def test_custom_variables(tmpdir):
    directory = generate(tmpdir, 'Shop-Front', 'tyrant_url=10.1.2.3:2001',
                         'session_prefix=shop:s:', 'session_timeout=600',
                         'http_port=8123', 'description=A shop', 'author=Ada')
    assert os.path.isdir(os.path.join(directory, 'shopfront', 'controllers'))
    dev = ini_settings(os.path.join(directory, 'development.ini'))
    assert dev['beaker.session.url'] == '10.1.2.3:2001'
    assert dev['beaker.session.prefix'] == 'shop:s:'
    assert dev['beaker.session.timeout'] == '600'
    assert dev['beaker.session.key'] == 'shopfront'
    assert ini_settings(os.path.join(directory, 'development.ini'),
                        'server:main')['port'] == '8123'
    setup_py = open(os.path.join(directory, 'setup.py')).read()
    assert "name='Shop-Front'" in setup_py
    assert "description='A shop'" in setup_py
    assert "author='Ada'" in setup_py
    assert 'shopfront.commands:TyrantCommand' in setup_py


def test_interactive_prompts_for_the_variables(tmpdir):
    # Answer the questions in order: tyrant_url, then defaults (empty lines).
    import subprocess
    process = subprocess.Popen(
        [sys.executable, PASTER, 'create', '-t', 'pylons_tcjson', 'AskMe'],
        cwd=str(tmpdir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    output = process.communicate(b'127.0.0.1:4242\n\n\n\n\n\n\n\n\n\n\n\n')[0]
    assert process.returncode == 0, output
    assert b'Enter tyrant_url' in output
    assert b'Enter session_timeout' in output
    assert b"['askme:session:']" in output        # the derived default
    assert b'Enter production_hosts' in output
    # Variables with a single possible answer are not asked.
    assert b'template_engine' not in output and b'sqlalchemy' not in output
    dev = ini_settings(str(tmpdir.join('AskMe', 'development.ini')))
    assert dev['beaker.session.url'] == '127.0.0.1:4242'
    assert dev['beaker.session.prefix'] == 'askme:session:'


@pytest.mark.parametrize('project_name, variables, message', [
    ('9Lives', [], 'starts with a digit'),
    ('class', [], 'Python keyword'),
    ('@@@', [], 'gives no Python package name'),
    ('json', [], 'would shadow'),
    ('Pylons', [], 'would shadow'),
    ('Good', ['tyrant_url=localhost'], 'has no port'),
    ('Good', ['tyrant_url=localhost:'], 'is not a number'),
    ('Good', ['tyrant_url=localhost:99999'], 'is not a number from 1 to 65535'),
    ('Good', ['tyrant_url=localhost:http'], 'is not a number'),
    ('Good', ['tyrant_url=tcp://localhost:1978'], 'without a scheme'),
    ('Good', ['tyrant_url=bad host:1978'], 'is not a host name'),
    ('Good', ['session_timeout=soon'], 'expected a whole number'),
    ('Good', ['session_timeout=-5'], 'expected a whole number'),
    ('Good', ['session_timeout=0'], 'expected a whole number'),
    ('Good', ['http_port=70000'], 'must not exceed 65535'),
    ('Good', ['session_prefix=a b'], 'must not contain spaces'),
    ('Good', ['template_engine=genshi'], 'Mako templates only'),
    ('Good', ['sqlalchemy=true'], 'does not set up SQLAlchemy'),
    ('Good', ['production_hosts=https://www.example.com'], 'is not a host name'),
    ('Good', ['production_hosts= '], 'give at least one host name'),
])
def test_invalid_variables_rejected_before_writing(tmpdir, project_name,
                                                   variables, message):
    code, output = paster_create(tmpdir, project_name, *variables)
    assert code != 0, output
    assert message in output, output
    assert 'Traceback' not in output, output
    assert tmpdir.listdir() == []          # not a single file written


def test_ini_files_load_with_pastedeploy(project, tmpdir):
    env = develop_install(project, tmpdir)
    script = r'''
import sys
from paste.deploy import appconfig, loadapp
for ini in ("development.ini", "test.ini", "production.ini"):
    conf = appconfig("config:" + ini, relative_to=".")
    app = loadapp("config:" + ini, relative_to=".")
    assert app.config["beaker.session.type"] == "ext:tcjson", ini
    print("%s debug=%s secure=%s url=%s" % (ini, app.config["debug"],
          conf["beaker.session.secure"], conf["beaker.session.url"]))
'''
    code, output = run([sys.executable, PASTER, 'make-config', 'MyApp',
                        'production.ini'], project, env)
    assert code == 0, output
    production = open(os.path.join(project, 'production.ini')).read()
    assert '${' not in production
    # Two secrets, each its own: sessions' and the application's.
    secrets = ini_settings(os.path.join(project, 'production.ini'))
    assert re.match(r'^[0-9a-f]{48}$', secrets['beaker.session.secret'])
    assert len(secrets['app_instance_secret']) >= 25
    assert secrets['beaker.session.secret'] != secrets['app_instance_secret']
    assert secrets['allowed_hosts'] == 'localhost'        # production_hosts' default
    assert secrets['session_sample'] == 'false' and secrets['access_log'] == 'true'
    server = ini_settings(os.path.join(project, 'production.ini'), 'server:main')
    assert server['use'] == 'egg:waitress#main' and server['host'] == '127.0.0.1'
    code, output = run([sys.executable, PASTER, 'setup-app', 'production.ini'], project, env)
    assert code == 0 and 'needs no setup' in output, output
    # A second make-config: new secrets, and the host names it is given.
    code, output = run([sys.executable, PASTER, 'make-config', 'MyApp', 'other.ini',
                        'allowed_hosts=www.example.com .example.org'], project, env)
    assert code == 0, output
    other = ini_settings(os.path.join(project, 'other.ini'))
    assert other['allowed_hosts'] == 'www.example.com .example.org'
    assert other['beaker.session.secret'] != secrets['beaker.session.secret']
    os.remove(os.path.join(project, 'other.ini'))
    code, output = run([sys.executable, '-c', script], project, env)
    assert code == 0, output
    assert 'development.ini debug=True secure=false url=127.0.0.1:1978' in output
    assert 'test.ini debug=True' in output
    assert 'production.ini debug=False secure=true' in output


def test_readme_teaches_beakers_calls_and_csrf(project):
    readme = open(os.path.join(project, 'README.txt')).read()
    for call in ('session.regenerate_id()', 'session.invalidate()',
                 'session.delete()', '@authenticate_form', 'h.csrf_field()'):
        assert call in readme, call
    assert 'SameSite=Lax is not enough' in readme
    # The helpers that only worked around Beaker's calls are gone.
    for path in all_files(project):
        if path.endswith(('.py', '.txt', '.mako')) and not path.endswith('tcjson.py'):
            text = open(path).read()
            assert 'destroy_session' not in text, path
            assert 'regenerate_session_id' not in text, path


def test_paster_offers_the_project_commands(project, tmpdir):
    env = project_env(project)
    code, output = run([sys.executable, PASTER, '--help'], project, env)
    assert code == 0, output
    assert 'tyrant' in output and 'tcjson-purge' in output
    assert 'controller' in output            # Pylons' own commands too
    code, output = run([sys.executable, PASTER, 'tyrant', '--help'], project, env)
    assert code == 0 and 'CONFIG_FILE' in output, output
