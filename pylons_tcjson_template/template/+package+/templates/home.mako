<%inherit file="/base.mako"/>
<%def name="title()">Welcome</%def>

<section class="hero">
  <h1>Your Pylons application is running</h1>
  <p class="lead">Its sessions are not pickles in files on this machine:
  Beaker stores each one as a <strong>JSON document in Tokyo Tyrant</strong>,
  where Java, Perl, Ruby or Node can read it with any Tyrant client and any
  JSON parser.</p>
  % if app_globals.session_sample:
  <p><a class="button" href="${h.url('session')}">Open the session sample &rarr;</a></p>
  % endif
</section>

## Development only (debug = true): a production page names no server.
% if c.debug and c.session_type == 'ext:tcjson':
<section class="card">
  <h2>Where the sessions go</h2>
  <dl class="facts">
    <dt>Tyrant server</dt><dd><code>${c.tyrant_url}</code></dd>
    <dt>Key prefix</dt><dd><code>${c.session_prefix}</code></dd>
    <dt>Expires after</dt><dd>${c.session_timeout} seconds without a visit</dd>
  </dl>
  % if c.tyrant_down:
  <p id="tyrant-down">Not answering: <code>${', '.join(c.tyrant_down)}</code>.
  To start the servers of this project, in the project directory:</p>
  <pre>paster tyrant development.ini</pre>
  <p>It runs <code>ttserver</code> when installed, otherwise tcjson-tyrant,
  on the address above, keeping the records in
  <code>data/tyrant/sessions.tch</code> so they survive restarts.</p>
  % endif
</section>
% elif c.debug:
<section class="card">
  <h2>Where the sessions go</h2>
  <p id="session-type">Beaker keeps them itself (<code>beaker.session.type =
  ${c.session_type}</code>), not in Tyrant, so the session sample is off.</p>
</section>
% endif

<section class="card">
  <h2>Next steps</h2>
  <ul>
    <li>Controllers live in <code>controllers/</code>; add one with
      <code>paster controller NAME</code>.</li>
    <li>Templates are Mako files in <code>templates/</code>.</li>
    <li>Remove expired sessions with
      <code>paster tcjson-purge --quiet CONFIG</code> (deploy/ has a timer).</li>
    <li>Run the tests with <code>nosetests</code>: they start their own
      Tyrant server.</li>
  </ul>
</section>
