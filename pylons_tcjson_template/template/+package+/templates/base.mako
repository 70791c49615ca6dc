## Layout shared by every page.  Pages inherit it with
##   <%inherit file="/base.mako"/>
## and define title() and, optionally, flash() to show flash messages.
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${self.title()}</title>
  <link rel="stylesheet" href="${h.url('/style.css')}">
  <link rel="icon" href="${h.url('/favicon.ico')}">
</head>
<body>
  <header class="topbar">
    <div class="wrap">
      <a class="brand" href="${h.url('home')}">${self.brand()}</a>
      <nav>
        <a href="${h.url('home')}">Home</a>
        % if app_globals.session_sample:
        <a href="${h.url('session')}">Session sample</a>
        % endif
      </nav>
    </div>
  </header>
  <main class="wrap">
    ${self.flash()}
    ${next.body()}
  </main>
  <footer class="wrap">
    Pylons 1.0 &middot; Beaker sessions stored as JSON in Tokyo Tyrant
  </footer>
</body>
</html>

<%def name="title()">Pylons + Tokyo Tyrant</%def>
<%def name="brand()">${app_globals.project_name}</%def>
<%def name="flash()"></%def>
