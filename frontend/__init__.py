"""The browser UI: server-rendered pages with small ES modules, no build step, works offline."""
