<%inherit file="/base.mako"/>
<%def name="title()">Session sample</%def>
## Flash messages: stored in the session by one request, shown by the next.
## c.problem: why the form just sent was refused (this page is then the
## answer "400 Bad Request").
<%def name="flash()">
  % if c.problem:
  <p class="flash flash-error" id="problem">${c.problem}</p>
  % endif
  % for message in c.messages:
  <p class="flash flash-${message.category}">${message}</p>
  % endfor
  % if c.logged_out:
  <p class="flash flash-success" id="logged-out">Logged out: your record was
    deleted from Tyrant and the cookie expired. This page started a
    brand-new session.</p>
  % endif
</%def>

<h1>Session sample</h1>

<div class="grid">
  <section class="card counter">
    <h2>Visits</h2>
    <p class="big" id="visits">${c.visits}</p>
    <p class="muted">This page adds 1 to <code>visits</code> on every view.
      Restart the application: the count goes on, because it lives in
      Tyrant, not in the process.</p>
  </section>

  <section class="card">
    <h2>Your session</h2>
    <dl class="facts">
      <dt>Session id</dt><dd><code id="session-id">${c.session_id}</code></dd>
      <dt>Tyrant key</dt><dd><code id="record-key">${c.record_key}</code></dd>
    </dl>
    % if c.user:
    <p id="signed-in">Signed in as <strong id="user">${c.user}</strong>.</p>
    % else:
    <form method="post" action="${h.url('session_login')}" class="login" id="login-form">
      ${h.csrf_field()}
      <label>Sign in as <input type="text" name="name" id="name" required maxlength="64" placeholder="alice"></label>
      <button type="submit" id="login">Sign in</button>
    </form>
    % endif
    <div class="actions">
      <form method="post" action="${h.url('session_regenerate')}" id="regenerate-form">
        ${h.csrf_field()}
        <button type="submit" id="regenerate">New session id</button>
      </form>
      <form method="post" action="${h.url('session_invalidate')}" id="start-over-form">
        ${h.csrf_field()}
        <button type="submit" id="start-over">Start over</button>
      </form>
      <form method="post" action="${h.url('session_logout')}" id="logout-form">
        ${h.csrf_field()}
        <button type="submit" class="danger" id="logout">Log out</button>
      </form>
    </div>
    <p class="muted">Signing in changes the session id
      (<code>session.regenerate_id()</code>, against session fixation);
      &ldquo;New session id&rdquo; does only that, keeping every value under
      a new key. &ldquo;Start over&rdquo; (<code>session.invalidate()</code>)
      deletes the record and begins a new, empty session. &ldquo;Log
      out&rdquo; (<code>session.delete()</code>) deletes the record and the
      cookie. Each time the old id is worthless afterwards. Every form here
      carries a hidden token against cross-site request forgery.</p>
  </section>
</div>

% if c.user:
<section class="card" id="user-sessions">
  <h2>Your sessions</h2>
  <p class="muted">Every browser where <strong>${c.user}</strong> signed in,
    oldest sign-in first. Signing out one of them deletes its record from
    Tyrant: on its next request that browser is anonymous, whichever
    process or server serves it.</p>
  <table class="values" id="sessions">
    <thead><tr><th>Signed in</th><th>Last request</th><th>Browser</th><th></th></tr></thead>
    <tbody>
    % for info in c.user_sessions:
      <tr class="${'current' if info.current else 'other'}" data-handle="${info.handle}">
        <td>${c.utc(info.signed_in)}</td>
        <td>${c.utc(info.accessed)}</td>
        <td><code>${info.detail.get('agent', u'-')}</code>
          % if info.current:
          <strong class="this-one">(this browser)</strong>
          % endif
        </td>
        <td class="right">
          <form method="post" action="${h.url('session_signout')}" class="signout-form">
            ${h.csrf_field()}
            <input type="hidden" name="handle" value="${info.handle}">
            <button type="submit" class="small">Sign out this one</button>
          </form>
        </td>
      </tr>
    % endfor
    </tbody>
  </table>
  <div class="actions">
    <form method="post" action="${h.url('session_signout_others')}" id="signout-others-form">
      ${h.csrf_field()}
      <button type="submit" id="signout-others">Sign out everywhere else</button>
    </form>
    <form method="post" action="${h.url('session_signout_all')}" id="signout-all-form">
      ${h.csrf_field()}
      <button type="submit" class="danger" id="signout-all">Sign out everywhere</button>
    </form>
  </div>
  <p class="muted">What is stored where: each session is one record,
    <code>&lt;prefix&gt;&lt;id&gt;:session</code>, holding
    <code>user</code>; it is the truth. Each sign-in also added a JSON line
    (session, time, browser) to the index
    <code id="index-key">${c.index_key}</code>, in one call that Tyrant runs
    atomically (lib/tcjson.lua), so concurrent sign-ins lose nothing. The
    list above reads the index and then the records; lines of sessions
    that ended (logout, expiry, purge) are dropped from the index as it
    goes. Sessions are named by a handle, a hash of the session id: the
    page never shows the ids of your other browsers, not even below.</p>
  <details>
    <summary>The index in Tyrant (ids shown as handles; ${c.revoked_lineages}
      signed-out lineage(s) remembered)</summary>
    <pre id="index-raw">${u'\n'.join(c.index_lines) or u'(none)'}</pre>
  </details>
</section>
% endif

<section class="card">
  <h2>Values</h2>
  % if c.items:
  <table class="values" id="values">
    <thead><tr><th>Name</th><th>Value (as JSON)</th><th>JSON type</th><th></th></tr></thead>
    <tbody>
    % for key, value in c.items:
      <tr>
        <td><code>${key}</code></td>
        <td><code>${h.as_json(value)}</code></td>
        <td><span class="type type-${h.json_type(value)}">${h.json_type(value)}</span></td>
        <td class="right">
          <form method="post" action="${h.url('session_delete')}">
            ${h.csrf_field()}
            <input type="hidden" name="key" value="${key}">
            <button type="submit" class="small">Delete</button>
          </form>
        </td>
      </tr>
    % endfor
    </tbody>
  </table>
  % else:
  <p class="muted" id="no-values">No values yet. Store one:</p>
  % endif

  <form method="post" action="${h.url('session_set')}" class="setform" id="set-form">
    ${h.csrf_field()}
    <label>Name <input type="text" name="key" id="key" required maxlength="64" placeholder="colour" value="${c.form.get('key', '')}"></label>
    <label>Value <input type="text" name="value" id="value" placeholder="blue, 42, true, [1, 2] ..." value="${c.form.get('value', '')}"></label>
    <label>Store as
      <select name="kind" id="kind">
        <option value="string">text (a JSON string)</option>
        <option value="json" ${'selected' if c.form.get('kind') == 'json' else ''}>JSON (number, true, null, [..], {..})</option>
      </select>
    </label>
    <button type="submit" id="store">Store</button>
  </form>
</section>

<section class="card">
  <h2>The record in Tyrant</h2>
  <p class="muted">The bytes stored under <code>${c.record_key}</code> when
    this request began &ndash; written by your previous request, so
    <code>visits</code> is one behind: this visit is written when the
    response starts.  Beaker adds <code>_creation_time</code> and
    <code>_accessed_time</code>; the backend adds <code>_expires</code>;
    the forms' CSRF token lives in <code>_authentication_token</code>;
    pending flash messages wait in <code>flash</code>.</p>
  % if c.raw is None:
  <pre id="raw">(no record yet: a new session is written at the end of its first request)</pre>
  % else:
  <pre id="raw">${c.raw}</pre>
  <details>
    <summary>Indented</summary>
    <pre>${h.pretty_json(c.raw)}</pre>
  </details>
  % endif
</section>
