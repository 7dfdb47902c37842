"""`sanawm serve`: the world model over HTTP and WebSocket, with a page for live control.

Modules: `config` (limits), `protocol` (/v1/realtime messages), `realtime` (one live
session), `scheduling` (model turns shared by sessions and jobs), `jobs` + `offline` (SQLite
job store, job runner, recordings), `images` (upload checks, frame encoding), `guard`
(host / origin / token), `app` (routes), `static/` (the page).
"""
