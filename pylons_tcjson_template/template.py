"""The ``pylons_tcjson`` paster template.

    paster create -t pylons_tcjson MyApp
    paster create -t pylons_tcjson --no-interactive MyApp \\
        tyrant_url=10.0.0.5:1978 session_timeout=7200

Every variable is checked in `check_vars`, which PasteScript calls before a
single file is written, so a typo never leaves half a project behind.  The
session backend's modules (`LIB_MODULES`) have one source, in this package;
`post` copies them into the new project's ``lib/`` so the project runs
without this template package installed.  Its development tools
(tcjson-tyrant, ``paster tyrant``, the Tyrant server its tests start) are
not copied: they come from this package, the project's ``dev`` extra.
"""
from __future__ import absolute_import

import binascii
import distutils.sysconfig
import imp
import json
import keyword
import os
import re
import shutil
import stat
import sys

import pkg_resources
from paste.script.command import BadCommand
from paste.script.templates import Template, var
from paste.util.template import paste_script_template_renderer

from pylons_tcjson_template import tyrant

HERE = os.path.dirname(os.path.abspath(__file__))

# What the running application needs from this package, copied as they are
# into <package>/lib/ of every new project (one source, here), in layer
# order: the connection to one server, which server holds a key, records,
# the Beaker backend and its server half (which every Tyrant server loads:
# ttserver -ext), sessions per user, purge.
# A module added to the backend is added here, and nowhere else.
LIB_MODULES = ('tyrant.py', 'servers.py', 'records.py', 'tcjson.py', 'tcjson.lua',
               'user_sessions.py', 'purge.py')

# The shell functions of setup.sh (Python 2.7 on Debian 12, the virtualenv),
# shared with this repository's own setup.sh; the project's setup.sh
# sources them from here.
SETUP_FUNCTIONS = ('python27.sh', os.path.join('deploy', 'python27.sh'))

# The known-good pins, one list for this repository and every project.  A
# project's constraints.txt gets the lines after the file's header (its
# leading comment lines, up to the first bare '#') and before this line.
CONSTRAINTS = os.path.join(HERE, 'constraints.txt')
REPOSITORY_ONLY = '# ---- this repository only'

# Names a generated package must not take: it would shadow what the
# application itself imports.
RESERVED_PACKAGES = frozenset("""
    beaker formencode mako markupsafe nose paste pastedeploy pastescript
    pkg_resources pylons pytyrant routes setuptools simplejson tempita
    test tests webhelpers webob webtest weberror
""".split())

def new_secret(nbytes=24):
    """A fresh random secret, hex encoded (48 characters by default)."""
    return binascii.hexlify(os.urandom(nbytes)).decode('ascii')


def split_url(url):
    """The tyrant_url variable -> its canonical text: one ``host:port``, or
    shards and dual-master pairs (``a1:1978|a2:1978;b1:1978|b2:1978``).
    The backend's own parser (tyrant.parse_servers) decides, so a project
    is never generated with a url its backend or `paster tyrant` refuses;
    BadCommand explains what is wrong."""
    try:
        return tyrant.canonical_url(tyrant.parse_servers(url, 'tyrant_url'))
    except tyrant.ConfigError as exc:
        raise BadCommand(str(exc))


def project_pins(path=CONSTRAINTS):
    """The pins (and their comments) of `path` that a generated project
    gets in its own constraints.txt, as one string."""
    lines = open(path).read().splitlines()
    ends = [n for n, line in enumerate(lines) if line.startswith(REPOSITORY_ONLY)]
    if '#' not in lines or not ends:
        raise BadCommand('%s: no header ending in a bare "#" line, or no line '
                         'starting %r' % (path, REPOSITORY_ONLY))
    return '\n'.join(lines[lines.index('#') + 1:ends[0]])


def template_version():
    """This template package's version: the pin of a project's dev extra."""
    return pkg_resources.get_distribution('pylons_tcjson_template').version


_HOST_NAME = re.compile(r'^\.?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+$'
                        r'|^\[[0-9A-Fa-f:.]+\]$')


def host_names(value):
    """production_hosts -> the names, space separated, each checked: a
    host name or IPv4 address (a leading dot allows the names under it),
    or an IPv6 address in brackets."""
    names = (value or '').replace(',', ' ').split()
    if not names:
        raise BadCommand('production_hosts: give at least one host name, '
                         'e.g. www.example.com')
    for name in names:
        if not _HOST_NAME.match(name):
            raise BadCommand('production_hosts: %r is not a host name (names are '
                             'separated by spaces, without scheme or port)' % name)
    return ' '.join(names)


def positive_int(name, value, upper=None):
    text = str(value).strip()
    if not text.isdigit() or int(text) == 0:
        raise BadCommand('%s %r: expected a whole number greater than 0'
                         % (name, value))
    if upper is not None and int(text) > upper:
        raise BadCommand('%s %r: must not exceed %d' % (name, value, upper))
    return int(text)


def _stdlib_dirs():
    # In a virtualenv, get_python_lib(standard_lib=True) is the venv's copy
    # of a handful of modules; the rest lives where modules like json are.
    venv_lib = distutils.sysconfig.get_python_lib(standard_lib=True)
    real_lib = os.path.dirname(os.path.dirname(os.path.abspath(json.__file__)))
    dirs = []
    for lib in (venv_lib, real_lib):
        dirs.extend([lib, os.path.join(lib, 'lib-dynload')])
    return [d for d in dirs if os.path.isdir(d)]


def _shadows_stdlib(name):
    if name in sys.builtin_module_names:
        return True
    try:
        handle, _, _ = imp.find_module(name, _stdlib_dirs())
    except ImportError:
        return False
    if handle:
        handle.close()
    return True


def check_package_name(project, package):
    if not package:
        raise BadCommand('Project name %r gives no Python package name: use '
                         'letters, digits and underscores, e.g. MyApp' % project)
    if package[0].isdigit():
        raise BadCommand('Project name %r gives the package name %r, which '
                         'starts with a digit: Python cannot import it'
                         % (project, package))
    if keyword.iskeyword(package):
        raise BadCommand('Project name %r gives the package name %r, a '
                         'Python keyword: choose another name' % (project, package))
    if package in RESERVED_PACKAGES or _shadows_stdlib(package):
        raise BadCommand('Project name %r gives the package name %r, which '
                         'would shadow a module the application needs: '
                         'choose another name' % (project, package))


class PylonsTcjsonTemplate(Template):
    """Pylons 1.0 project with Beaker sessions as JSON in Tokyo Tyrant."""

    _template_dir = 'template'
    summary = 'Pylons 1.0 application, Beaker sessions as JSON in Tokyo Tyrant'
    use_cheetah = False
    # Files ending in _tmpl are Tempita templates ({{package}} etc.).
    template_renderer = staticmethod(paste_script_template_renderer)
    # Written to the project's paster_plugins.txt: `paster controller`,
    # `paster serve` etc. come from these; the project's own commands
    # (`paster tyrant`, `paster tcjson-purge`) come from its own egg-info.
    egg_plugins = ['PasteScript', 'Pylons']

    vars = [
        var('tyrant_url', 'host:port of the Tokyo Tyrant server holding '
            'the sessions (several: a1:1978|a2:1978;b1:1978, see README)',
            default='127.0.0.1:1978'),
        var('session_prefix', 'Prefix of every session key in Tyrant',
            default='<package>:session:'),
        var('session_timeout', 'Seconds of inactivity before a session '
            'expires', default='3600'),
        var('http_port', 'Port `paster serve development.ini` listens on',
            default='5000'),
        var('production_hosts', 'Host names the site answers to in production, '
            'e.g. "www.example.com example.com" (allowed_hosts of production.ini; '
            'development answers localhost only)', default='localhost'),
        var('description', 'One-line description of the project', default=''),
        var('author', 'Author name', default=''),
        var('author_email', 'Author email', default=''),
        var('url', 'Project home page', default=''),
        var('version', 'Version', default='0.1'),
    ]

    def check_vars(self, vars, cmd):
        """Ask for / default the variables, then validate all of them.

        PasteScript calls this before any file is written, so raising
        BadCommand here leaves the disk untouched.
        """
        check_package_name(vars.get('project', ''), vars.get('package', ''))
        # Offer the prefix derived from this project's package as the
        # default, so the prompt shows it (read_vars returns _read_vars).
        prefix = '%s:session:' % vars['package']
        self._read_vars = [
            var(v.name, v.description, default=prefix, should_echo=v.should_echo)
            if v.name == 'session_prefix' else v for v in self.vars]
        converted = Template.check_vars(self, vars, cmd)
        self.validate(converted)
        vars.update(converted)
        return converted

    def validate(self, vars):
        package = vars['package']
        vars['tyrant_url'] = split_url(vars['tyrant_url'])
        prefix = (vars.get('session_prefix') or '').strip()
        if not prefix or prefix == '<package>:session:':
            prefix = '%s:session:' % package
        if any(ch.isspace() for ch in prefix) or '%' in prefix:
            raise BadCommand('session_prefix %r must not contain spaces or '
                             '%%' % prefix)
        vars['session_prefix'] = prefix
        vars['session_timeout'] = positive_int('session_timeout',
                                               vars['session_timeout'])
        vars['http_port'] = positive_int('http_port', vars['http_port'], 65535)
        vars['production_hosts'] = host_names(vars.get('production_hosts'))
        # Pylons' own template asks for these two; this one offers a single
        # answer to each, so it does not ask, but a command line that
        # expects another answer is told rather than ignored.
        engine = (vars.get('template_engine') or 'mako').strip().lower()
        if engine != 'mako':
            raise BadCommand('template_engine %r: this template ships Mako '
                             'templates only (template_engine=mako)' % engine)
        vars['template_engine'] = 'mako'
        if str(vars.get('sqlalchemy', 'false')).strip().lower() in (
                'true', 'yes', 'on', '1'):
            raise BadCommand('sqlalchemy: this template does not set up '
                             'SQLAlchemy; create the project without it and '
                             'add a model yourself')
        vars['sqlalchemy'] = False
        for name in ('description', 'author', 'author_email', 'url'):
            vars[name] = vars.get(name) or ''
        vars['version'] = str(vars.get('version') or '0.1')
        missing = [name for name in LIB_MODULES + (SETUP_FUNCTIONS[0], CONSTRAINTS)
                   if not os.path.isfile(os.path.join(HERE, name))]
        if missing:
            raise BadCommand('%s missing from %s: this template package is '
                             'incomplete' % (', '.join(missing), HERE))
        return vars

    def pre(self, command, output_dir, vars):
        package = vars['package']
        vars['package_logger'] = 'app' if package == 'root' else package
        vars['zip_safe'] = False
        # One secret per generated project: development.ini and test.ini
        # sign session cookies with it.  deployment.ini gets its own from
        # `paster make-config`.
        vars.setdefault('session_secret', new_secret())
        vars.setdefault('app_instance_secret', new_secret())
        # constraints.txt_tmpl: the known-good pins, and the dev extra's.
        vars['project_pins'] = project_pins()
        vars['template_version'] = template_version()
        # Where production.ini's waitress listens (127.0.0.1, behind the
        # reverse proxy of deploy/nginx-site.conf).
        vars['production_port'] = 8080
        # +dot+gitignore is written as .gitignore (PasteScript skips files
        # whose names start with a dot).
        vars['dot'] = '.'

    def post(self, command, output_dir, vars):
        """Copy the single-source files into the project: LIB_MODULES into
        <package>/lib/, setup.sh's functions into deploy/; make setup.sh
        executable (PasteScript keeps no file modes)."""
        copies = [(name, os.path.join(vars['package'], 'lib', name))
                  for name in LIB_MODULES] + [SETUP_FUNCTIONS]
        for name, target in copies:
            if command.verbose:
                print('  Copying %s to %s' % (name, target))
            if not command.simulate:
                shutil.copyfile(os.path.join(HERE, name),
                                os.path.join(output_dir, target))
        script = os.path.join(output_dir, 'setup.sh')
        if not command.simulate:
            mode = os.stat(script).st_mode
            os.chmod(script, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
