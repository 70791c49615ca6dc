"""pylons_tcjson_template: ``paster create -t pylons_tcjson MyApp``.

Creates a Pylons 1.0 application whose Beaker sessions live in Tokyo Tyrant
as plain JSON.  Install under pylons_tcjson_template/constraints.txt (see
README.txt).
"""
from setuptools import find_packages, setup

setup(
    name='pylons_tcjson_template',
    version='0.1.0',
    description='PasteScript template: Pylons 1.0 with Beaker sessions '
                'stored as JSON in Tokyo Tyrant',
    long_description=open('README.txt').read(),
    classifiers=[
        'Framework :: Pylons',
        'Framework :: Paste',
        'Programming Language :: Python :: 2.7',
        'Topic :: Internet :: WWW/HTTP :: Session',
    ],
    keywords='pylons paste template beaker session tokyo tyrant json',
    license='MIT',
    packages=find_packages(exclude=['tests', 'tests.*', 'bench']),
    include_package_data=True,
    zip_safe=False,
    python_requires='>=2.7, <3',
    install_requires=[
        'PasteScript',
        'Tempita',
        'Pylons>=1.0,<1.1',
        'Beaker>=1.11',
        'pytyrant>=1.1.17',
        'simplejson',
        # AES for beaker.session.encrypt_key (crypto_type = cryptography)
        'cryptography',
        # Lua for tcjson-tyrant -ext (runs tcjson.lua as ttserver does)
        'lupa',
    ],
    extras_require={
        # bench/run.py's peers; in `test` too so the bench smoke test runs them
        'bench': ['python-memcached', 'redis'],
        'test': ['pytest', 'pytest-timeout', 'WebTest', 'nose',
                 'python-memcached', 'redis'],
    },
    entry_points={
        'paste.paster_create_template': [
            'pylons_tcjson = pylons_tcjson_template.template:PylonsTcjsonTemplate',
        ],
        'console_scripts': [
            'tcjson-tyrant = pylons_tcjson_template.devtyrant.server:main',
            'tcjson-demo = pylons_tcjson_template.demo:main',
        ],
    },
)
