"""The web console: every node serves it at /console on its AWS HTTP port.

- `app`: `ConsoleService`, the `RestService` the AWS door hands /console requests to;
- `views`: what each page shows, computed from the metadata image (pure);
- `actions`: a submitted form as the Kinesis call it makes (pure);
- `payloads`: a record's payload as text, JSON, hex or base64, KPL aggregates expanded (pure);
- `rates`: the write-rate history behind the streams list's sparklines (pure);
- `sessions`: sign-in sessions and CSRF tokens (pure HMAC);
- `series`: a stream's series in this node's Prometheus registry (what it counted, the lag);
- `web`: the ASGI plumbing; `templates/` (Jinja2) and `static/` (vendored htmx and uPlot, see
  `static/VENDORED.md`, and the console's own CSS and script).
"""
