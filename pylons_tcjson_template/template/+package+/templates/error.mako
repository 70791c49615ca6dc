<%inherit file="/base.mako"/>
## Error pages never touch the session, so they work while Tyrant is down.
<%def name="title()">${c.code} ${c.title}</%def>

<section class="card error-page">
  <h1>${c.code} &ndash; ${c.title}</h1>
  % if c.message:
  <p>${c.message}</p>
  % endif
  <p><a href="${h.url('home')}">Back to the front page</a></p>
</section>
